/* test_butd_subnetworks.c - the sub-network analysis of guided BU-TD networks (bioflex-eval
 * --subnetworks; bf_butd_subnetworks_compute in butd_subnetworks.c, spec section 3):
 *  - bf_butd_mask_overlap on hand-made masks (binary cosine, Jaccard, the empty-mask convention);
 *  - a hand-set fc net whose task head and TD weights give known masks per level;
 *  - a guided conv net with a residual block: the masks, fractions, cosines and Jaccard indices
 *    equal ones computed here from bf_butd_instruct's TD activities (a batch of every task, rows
 *    of the same task identical), two tasks made identical have cosine 1, the net's batch and mode
 *    are restored; with batch-norm the TD copies' running statistics (evaluation mode) are used;
 *  - the bioflex-eval path: bf_butd_evaluate_checkpoint on a saved guided fc net over generated
 *    Multi-MNIST gives the same analysis, its JSON holds it, an unguided config is refused, and
 *    the bioflex-eval program (when built) writes the same JSON. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bioflex/butd.h"
#include "bioflex/checkpoint.h"
#include "bioflex/train.h"
#include "data_parallel.h"
#include "task_eval.h"
#include "testutil.h"

static void test_mask_overlap(void) {
    const uint8_t a[5] = {1, 1, 0, 0, 1}, b[5] = {1, 0, 1, 0, 1}, none[5] = {0};
    double c, j;
    bf_butd_mask_overlap(a, b, 5, &c, &j);
    CHECK(fabs(c - 2.0 / 3.0) < 1e-15 && fabs(j - 0.5) < 1e-15, "|a|=|b|=3, 2 common: cosine %g (2/3), jaccard %g (1/2)", c, j);
    bf_butd_mask_overlap(a, a, 5, &c, &j);
    CHECK(c == 1.0 && j == 1.0, "a mask with itself: cosine %g, jaccard %g", c, j);
    bf_butd_mask_overlap(a, none, 5, &c, &j);
    CHECK(c == 0.0 && j == 0.0, "against an empty mask: cosine %g, jaccard %g (both 0)", c, j);
    bf_butd_mask_overlap(none, none, 5, &c, &j);
    CHECK(c == 0.0 && j == 0.0, "two empty masks: cosine %g, jaccard %g (0 by convention)", c, j);
    const uint8_t d[4] = {1, 1, 1, 1}, e[4] = {1, 0, 0, 0};
    bf_butd_mask_overlap(d, e, 4, &c, &j);
    CHECK(fabs(c - 0.5) < 1e-15 && fabs(j - 0.25) < 1e-15, "4 units vs 1 of them: cosine %g (1/2), jaccard %g (1/4)", c, j);
}

static void upload_at(bf_backend *b, float *dev, const float *host, size_t n) {
    CHECK_OK(bf_to_device(b, dev, host, n * sizeof(float)));
}

static int level_index(const bf_butd_subnetworks *r, const char *name) {
    for (int i = 0; i < r->num_levels; i++)
        if (!strcmp(r->levels[i].name, name)) return i;
    return -1;
}

/* fc1 (4 units) -> fc2 (4 units) -> head. Task head rows: td[2] of task k; fc2's W is a cyclic shift,
 * so td[1][i] = ReLU(td[2][i - 1]). Task 0: fc2 {1,0,1,0}, fc1 {0,1,0,1}; task 1: fc2 {1,1,0,0},
 * fc1 {0,1,1,0}; task 2: nothing active. */
static void test_known_masks(bf_backend *b) {
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 1, .guided = 1, .num_tasks = 3, .seed = 1};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 1, 4, 2, &opt, &net));
    if (!net) return;
    bf_butd_add_linear(net, "fc1", 4, 1);
    bf_butd_add_linear(net, "fc2", 4, 1);
    CHECK_OK(bf_butd_finalize(net, 2));
    CHECK(net->num_task_layers == 1 && net->task_head[0].linear.out == 3 && net->task_head[0].linear.in == 4,
          "one task-head layer, tasks 3 -> 4 units");
    const float head[3 * 4] = {1, -1, 2, 0, 1, 1, -1, 0, -1, -1, -1, -1};
    upload_at(b, net->task_data + net->task_head[0].w, head, 12);
    float w2[16] = {0};
    for (int o = 0; o < 4; o++) w2[o * 4 + (o + 1) % 4] = 1.0f; /* W[o][i] = 1 for i = o + 1 (mod 4) */
    upload_at(b, net->param_data + net->params[net->layers[1].w].offset, w2, 16);
    bf_butd_subnetworks r;
    CHECK_OK(bf_butd_subnetworks_compute(net, &r));
    CHECK(r.num_tasks == 3 && r.num_levels == 2, "3 tasks, 2 gated levels (got %d, %d)", r.num_tasks, r.num_levels);
    if (r.num_levels == 2) {
        const uint8_t want_fc1[12] = {0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0}, want_fc2[12] = {1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0};
        const bf_butd_subnetwork_level *l1 = &r.levels[0], *l2 = &r.levels[1];
        CHECK(!strcmp(l1->name, "fc1") && !strcmp(l2->name, "fc2") && l1->units == 4 && l2->units == 4,
              "levels fc1, fc2 of 4 units (%s %d, %s %d)", l1->name, l1->units, l2->name, l2->units);
        CHECK(!memcmp(l1->masks, want_fc1, 12) && !memcmp(l2->masks, want_fc2, 12), "the hand-set masks");
        for (int i = 0; i < 2; i++) {
            const bf_butd_subnetwork_level *l = &r.levels[i];
            CHECK(l->fraction[0] == 0.5 && l->fraction[1] == 0.5 && l->fraction[2] == 0.0, "%s fractions %g %g %g",
                  l->name, l->fraction[0], l->fraction[1], l->fraction[2]);
            CHECK(fabs(l->cosine[0 * 3 + 1] - 0.5) < 1e-15 && fabs(l->jaccard[0 * 3 + 1] - 1.0 / 3) < 1e-15,
                  "%s tasks 0, 1: cosine %g (1/2), jaccard %g (1/3)", l->name, l->cosine[1], l->jaccard[1]);
            CHECK(l->cosine[0 * 3 + 2] == 0 && l->jaccard[0 * 3 + 2] == 0 && l->cosine[2 * 3 + 2] == 0 &&
                      l->jaccard[2 * 3 + 2] == 0 && l->cosine[0] == 1 && l->jaccard[0] == 1,
                  "%s: empty task 2 gives 0 (also with itself); task 0 with itself 1", l->name);
        }
        CHECK(r.whole.units == 8 && r.whole.active[0] == 4 && r.whole.common[1] == 2 &&
                  fabs(r.whole.cosine[1] - 0.5) < 1e-15 && fabs(r.whole.jaccard[1] - 2.0 / 6) < 1e-15,
              "the whole network: 8 units, cosine %g, jaccard %g", r.whole.cosine[1], r.whole.jaccard[1]);
    }
    bf_butd_subnetworks_print(&r, stdout);
    bf_butd_subnetworks_free(&r);
    bf_butd_destroy(net);
}

/* Every figure of r against masks cut here from the TD activities of one instruction of the tasks
 * `tasks` (a batch; rows of one task must agree). levels[] are the TD buffers, in r's order. */
static void check_against_instruct(bf_backend *b, bf_butd_net *net, const bf_butd_subnetworks *r, const char *what) {
    const int T = net->opt.num_tasks, n = 2 * T;
    int32_t tasks[64];
    for (int j = 0; j < n; j++) tasks[j] = j % T;
    CHECK_OK(bf_butd_set_batch(net, n));
    CHECK_OK(bf_butd_instruct(net, tasks));
    int level = 0;
    long whole_active[8] = {0}, whole_common[64] = {0}, whole_units = 0;
    for (int i = 0; i < net->num_layers - 1; i++) {
        const bf_butd_layer *l = &net->layers[i];
        for (int inner = l->kind == BF_BUTD_BLOCK; inner >= 0; inner--, level++) {
            const float *dev = inner ? l->td_u : net->td[i + 1];
            char name[BF_NAME_MAX];
            snprintf(name, sizeof name, inner ? "%s.conv1" : "%s", l->name);
            if (level >= r->num_levels) break;
            const bf_butd_subnetwork_level *got = &r->levels[level];
            const int units = l->out_size;
            CHECK(!strcmp(got->name, name) && got->units == units, "%s level %d: %s %d units (want %s %d)", what, level,
                  got->name, got->units, name, units);
            float *td = bf_test_download(b, dev, (size_t)n * units);
            int rows_agree = 1, masks_equal = 1, active[8] = {0}, common[64] = {0};
            for (int j = 0; j < n; j++)
                for (int u = 0; u < units; u++) {
                    int k = j % T, on = td[(size_t)j * units + u] > 0.0f;
                    if (j >= T) rows_agree &= on == (td[(size_t)(j - T) * units + u] > 0.0f);
                    else masks_equal &= on == got->masks[(size_t)k * units + u], active[k] += on;
                }
            for (int a = 0; a < T; a++)
                for (int c = 0; c < T; c++)
                    for (int u = 0; u < units; u++)
                        common[a * T + c] += td[(size_t)a * units + u] > 0.0f && td[(size_t)c * units + u] > 0.0f;
            CHECK(rows_agree, "%s %s: two samples of one task get the same mask", what, name);
            CHECK(masks_equal, "%s %s: the masks are 1[td > 0] of bf_butd_instruct", what, name);
            double worst = 0;
            for (int a = 0; a < T; a++) {
                worst = fmax(worst, fabs(got->fraction[a] - (double)active[a] / units));
                for (int c = 0; c < T; c++) {
                    double na = active[a], nc = active[c], both = common[a * T + c];
                    double cos = na > 0 && nc > 0 ? both / sqrt(na * nc) : 0, jac = na + nc - both > 0 ? both / (na + nc - both) : 0;
                    worst = fmax(worst, fmax(fabs(got->cosine[a * T + c] - cos), fabs(got->jaccard[a * T + c] - jac)));
                    whole_common[a * T + c] += common[a * T + c];
                }
                whole_active[a] += active[a];
            }
            whole_units += units;
            CHECK(worst < 1e-12, "%s %s: fractions, cosines and Jaccard indices as computed here (max diff %g)", what,
                  name, worst);
            free(td);
        }
    }
    CHECK(level == r->num_levels, "%s: %d gated levels (want %d)", what, r->num_levels, level);
    double worst = fabs((double)r->whole.units - whole_units);
    for (int a = 0; a < T; a++)
        for (int c = 0; c < T; c++) {
            double na = whole_active[a], nc = whole_active[c], both = whole_common[a * T + c];
            worst = fmax(worst, fabs(r->whole.cosine[a * T + c] - (na > 0 && nc > 0 ? both / sqrt(na * nc) : 0)));
            worst = fmax(worst, fabs(r->whole.jaccard[a * T + c] - both / (na + nc - both)));
        }
    CHECK(worst < 1e-12, "%s: the whole network's figures (max diff %g)", what, worst);
}

/* The guided conv net of the equivalence tests (butd_cases.h): convs, a depthwise conv, a residual
 * block and a linear layer; 3 tasks through a 6-wide task head. */
static void test_conv_net(bf_backend *b) {
    bf_butd_options opt = {.learning = BF_BUTD_COUNTER_HEBB, .shared_weights = 0, .guided = 1, .num_tasks = 3,
                           .task_embedding = 6, .seed = 3};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, 8, &opt, &net));
    if (!net) return;
    bf_butd_add_conv(net, "core_net.0", 4, 3, 1, 0, 1, 1);
    bf_butd_add_conv(net, "core_net.1", 4, 2, 2, 0, 4, 1);
    bf_butd_add_conv(net, "core_net.2", 6, 3, 2, 1, 1, 1);
    bf_butd_add_block(net, "core_net.3", 6, 1);
    bf_butd_add_linear(net, "core_net.4", 10, 1);
    CHECK_OK(bf_butd_finalize(net, 5));
    CHECK_OK(bf_butd_set_batch(net, 5));
    bf_butd_subnetworks r;
    CHECK_OK(bf_butd_subnetworks_compute(net, &r));
    CHECK(net->batch == 5 && net->training == 1, "batch %d and training %d restored", net->batch, net->training);
    CHECK(r.num_levels == 6 && !strcmp(r.levels[3].name, "core_net.3.conv1") && !strcmp(r.levels[4].name, "core_net.3"),
          "6 gated levels, the block's inner one before its output");
    int partial = 0, differ = 0;
    for (int i = 0; i < r.num_levels; i++) {
        for (int k = 0; k < 3; k++) partial += r.levels[i].fraction[k] > 0 && r.levels[i].fraction[k] < 1;
        differ += r.levels[i].cosine[1] < 1;
    }
    CHECK(partial >= 12 && differ >= 3, "the instruction opens part of the units (%d of 18 masks partial), tasks differ "
          "(%d levels)", partial, differ);
    printf("guided conv net, task 0 active fractions:");
    for (int i = 0; i < r.num_levels; i++) printf(" %s %.3f", r.levels[i].name, r.levels[i].fraction[0]);
    printf("; cosine(0, 1) %.3f over the network\n", r.whole.cosine[1]);
    check_against_instruct(b, net, &r, "conv net");
    bf_butd_subnetworks_free(&r);

    /* Tasks 0 and 2 made identical: the first TD layer of the task head (tasks -> embedding) gets
     * row 2 = row 0. Every level's cosine and Jaccard index of (0, 2) is then 1. */
    const bf_butd_layer *top = &net->task_head[net->num_task_layers - 1];
    CHECK(top->linear.out == 3, "the task head's top layer reads the 3 tasks");
    float *w = bf_test_download(b, net->task_data + top->w, (size_t)top->linear.out * top->linear.in);
    memcpy(w + 2 * top->linear.in, w, (size_t)top->linear.in * sizeof(float));
    upload_at(b, net->task_data + top->w, w, (size_t)top->linear.out * top->linear.in);
    free(w);
    CHECK_OK(bf_butd_subnetworks_compute(net, &r));
    int ones = 0;
    for (int i = 0; i < r.num_levels; i++)
        ones += r.levels[i].cosine[0 * 3 + 2] == 1.0 && r.levels[i].jaccard[2 * 3 + 0] == 1.0 && r.levels[i].active[0] > 0 &&
                !memcmp(r.levels[i].masks, r.levels[i].masks + 2 * (size_t)r.levels[i].units, (size_t)r.levels[i].units);
    CHECK(ones == r.num_levels && r.whole.cosine[2] == 1.0, "identical tasks: cosine and Jaccard 1 at %d of %d levels",
          ones, r.num_levels);
    check_against_instruct(b, net, &r, "conv net, tasks 0 = 2");
    bf_butd_subnetworks_free(&r);

    bf_butd_options unguided = opt;
    unguided.guided = 0;
    bf_butd_net *plain = NULL;
    CHECK_OK(bf_butd_create(b, 1, 12, 12, 2, &unguided, &plain));
    if (plain) {
        bf_butd_add_linear(plain, "fc", 4, 1);
        CHECK_OK(bf_butd_finalize(plain, 2));
        bf_status s = bf_butd_subnetworks_compute(plain, &r);
        CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "not guided"), "an unguided net refused: %s", bf_last_error());
        CHECK(r.levels == NULL && r.num_levels == 0, "nothing left allocated after the refusal");
    }
    bf_butd_destroy(plain);
    bf_butd_destroy(net);
}

/* With batch-norm the instruction pass goes through the TD copies: the analysis takes their
 * running statistics (evaluation mode), moved here by training-mode instructions first. */
static void test_batch_norm(bf_backend *b) {
    bf_butd_options opt = {.learning = BF_BUTD_BACKPROP, .shared_weights = 1, .guided = 1, .num_tasks = 3,
                           .task_embedding = 4, .batch_norm = 1, .seed = 5};
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_create(b, 2, 6, 5, 6, &opt, &net));
    if (!net) return;
    bf_butd_add_conv(net, "conv1", 3, 3, 1, 1, 1, 0);
    bf_butd_add_block(net, "layer1.0", 4, 2);
    bf_butd_add_block(net, "layer1.1", 4, 1);
    CHECK_OK(bf_butd_finalize(net, 1));
    const int32_t mixed[6] = {0, 1, 1, 2, 2, 2};
    CHECK_OK(bf_butd_set_batch(net, 6));
    for (int step = 0; step < 3; step++) CHECK_OK(bf_butd_instruct(net, mixed)); /* training mode: statistics move */
    bf_butd_subnetworks r;
    CHECK_OK(bf_butd_subnetworks_compute(net, &r));
    CHECK(net->training == 1 && net->batch == 6, "training mode and batch restored");
    CHECK(r.num_levels == 5, "conv1, two blocks' inner and outer levels: %d", r.num_levels);
    bf_butd_set_training(net, 0);
    check_against_instruct(b, net, &r, "batch-norm net (evaluation mode)");
    bf_butd_subnetworks_free(&r);
    bf_butd_destroy(net);
}

/* ---- the bioflex-eval path, on generated Multi-MNIST ---- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16), p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void write_digits(const char *dir, const char *prefix, int count) {
    size_t bytes = 16 + (size_t)count * 784;
    unsigned char *img = malloc(bytes), *lab = malloc(8 + (size_t)count);
    put_be32(img, 0x803), put_be32(img + 4, (uint32_t)count), put_be32(img + 8, 28), put_be32(img + 12, 28);
    for (int i = 0; i < count; i++)
        for (int p = 0; p < 784; p++) img[16 + (size_t)i * 784 + p] = (unsigned char)((i * 37 + p * 11 + (p / 28) * 5) % 251);
    put_be32(lab, 0x801), put_be32(lab + 4, (uint32_t)count);
    for (int i = 0; i < count; i++) lab[8 + i] = (unsigned char)((i * 7 + 3) % 10);
    char path[600];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(img, 1, bytes, f) == bytes, "write %s", path);
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    f = fopen(path, "wb");
    CHECK(f && fwrite(lab, 1, 8 + (size_t)count, f) == 8 + (size_t)count, "write %s", path);
    if (f) fclose(f);
    free(img);
    free(lab);
}

static const char *sets[] = {"run.device=cpu", "run.threads=1", "data.dataset=multi_mnist", "data.test_limit=8",
                             "data.batch_size=4", "butd.network=fc", "butd.hidden=24", "butd.depth=2",
                             "butd.task_embedding=5", "butd.guided=true", "butd.learning=counter_hebb"};

static void configure(bf_config *cfg, const char *dir, int guided) {
    bf_config_defaults(cfg);
    char path[600];
    snprintf(path, sizeof path, "data.path=%s", dir);
    CHECK_OK(bf_config_set(cfg, path));
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (guided || (strncmp(sets[i], "butd.guided", 11) && strncmp(sets[i], "butd.task_embedding", 19)))
            CHECK_OK(bf_config_set(cfg, sets[i]));
    CHECK_OK(bf_config_validate(cfg));
}

/* The network bioflex-eval builds for cfg, saved to path; returned for comparison. */
static bf_butd_net *saved_net(bf_backend *b, const bf_config *cfg, const char *path) {
    bf_butd_net *net = NULL;
    CHECK_OK(bf_butd_build(b, &cfg->butd, 1, 28, 28, 4, 10, 2, cfg->run.seed, &net));
    if (net) CHECK_OK(bf_butd_save(net, path));
    return net;
}

static double json_number(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* The JSON's layers against r: names, units, fractions and the one pair's figures. */
static void check_json(const char *path, const bf_butd_subnetworks *r, const char *what) {
    size_t n = 0;
    char *text = bf_test_read_file(path, &n);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    CHECK(root != NULL, "%s: %s parses as JSON", what, path);
    if (!root) {
        free(text);
        return;
    }
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers");
    CHECK(json_number(root, "tasks") == r->num_tasks && cJSON_GetArraySize(layers) == r->num_levels,
          "%s: %d tasks, %d layers", what, r->num_tasks, cJSON_GetArraySize(layers));
    double worst = 0;
    int names_ok = 1;
    for (int i = 0; i <= r->num_levels && i <= cJSON_GetArraySize(layers); i++) {
        const cJSON *l = i < r->num_levels ? cJSON_GetArrayItem(layers, i) : cJSON_GetObjectItemCaseSensitive(root, "all_layers");
        const bf_butd_subnetwork_level *want = i < r->num_levels ? &r->levels[i] : &r->whole;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(l, "name");
        names_ok &= cJSON_IsString(name) && !strcmp(name->valuestring, want->name) && json_number(l, "units") == want->units;
        const cJSON *fraction = cJSON_GetObjectItemCaseSensitive(l, "active_fraction");
        for (int k = 0; k < r->num_tasks; k++) {
            const cJSON *f = cJSON_GetArrayItem(fraction, k);
            worst = fmax(worst, f ? fabs(f->valuedouble - want->fraction[k]) : 1);
        }
        const cJSON *pair = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(l, "pairs"), 0);
        worst = fmax(worst, fabs(json_number(pair, "cosine") - want->cosine[1]));
        worst = fmax(worst, fabs(json_number(pair, "jaccard") - want->jaccard[1]));
        worst = fmax(worst, fabs(json_number(pair, "common_units") - want->common[1]));
        if (isnan(worst)) worst = 1;
    }
    CHECK(names_ok, "%s: the layers' names and units", what);
    CHECK(worst < 1e-12, "%s: the JSON's fractions, cosines, Jaccard indices (max diff %g)", what, worst);
    cJSON_Delete(root);
    free(text);
}

static int same_analysis(const bf_butd_subnetworks *a, const bf_butd_subnetworks *b) {
    if (a->num_tasks != b->num_tasks || a->num_levels != b->num_levels) return 0;
    for (int i = 0; i < a->num_levels; i++)
        if (strcmp(a->levels[i].name, b->levels[i].name) || a->levels[i].units != b->levels[i].units ||
            memcmp(a->levels[i].masks, b->levels[i].masks, (size_t)a->num_tasks * a->levels[i].units))
            return 0;
    return 1;
}

static void test_evaluate_checkpoint(bf_backend *b, const char *tmp) {
    char dir[600], weights[600], plain_weights[600], json[600];
    snprintf(dir, sizeof dir, "%s/digits", tmp);
    mkdir(dir, 0700);
    write_digits(dir, "train", 20);
    write_digits(dir, "t10k", 8);
    snprintf(weights, sizeof weights, "%s/guided.safetensors", tmp);
    snprintf(plain_weights, sizeof plain_weights, "%s/unguided.safetensors", tmp);
    snprintf(json, sizeof json, "%s/subnetworks.json", tmp);
    bf_config cfg, plain_cfg;
    configure(&cfg, dir, 1);
    configure(&plain_cfg, dir, 0);
    bf_butd_net *net = saved_net(b, &cfg, weights), *plain = saved_net(b, &plain_cfg, plain_weights);
    bf_butd_subnetworks want, got = {0};
    CHECK_OK(bf_butd_subnetworks_compute(net, &want));
    bf_eval_result res;
    bf_task_eval_result tasks = {0};
    char file[BF_PATH_MAX];
    CHECK_OK(bf_butd_evaluate_checkpoint(&cfg, weights, &res, &tasks, file, &got));
    CHECK(same_analysis(&got, &want) && got.num_levels == 2 && !strcmp(got.levels[0].name, "core_net.0") &&
              got.levels[1].units == 24,
          "bioflex-eval's path: the saved net's masks (%d levels)", got.num_levels);
    CHECK(tasks.num_tasks == 2 && res.samples == 8, "the checkpoint is scored as well (%d tasks, %d images)",
          tasks.num_tasks, res.samples);
    FILE *f = fopen(json, "w");
    CHECK(f != NULL, "open %s", json);
    if (f) {
        CHECK_OK(bf_butd_subnetworks_write_json(&got, f));
        fclose(f);
        check_json(json, &want, "bf_butd_subnetworks_write_json");
    }
    bf_butd_subnetworks_print(&got, stdout);
    bf_butd_subnetworks_free(&got);
    bf_status s = bf_butd_evaluate_checkpoint(&plain_cfg, plain_weights, &res, &tasks, file, &got);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "guided"), "an unguided checkpoint refused: %s", bf_last_error());

    /* The program itself, where it is built. */
    char eval_path[600], cmd[4096], out_json[600], log[600];
    snprintf(eval_path, sizeof eval_path, "%s/bioflex-eval", BIOFLEX_BINARY_DIR);
    snprintf(out_json, sizeof out_json, "%s/eval_subnetworks.json", tmp);
    snprintf(log, sizeof log, "%s/eval.log", tmp);
    if (access(eval_path, X_OK) != 0) {
        printf("note: %s not built: the program's run is not checked\n", eval_path);
    } else {
        char ini[600];
        snprintf(ini, sizeof ini, "%s/cfg.ini", tmp);
        f = fopen(ini, "w");
        if (f) fprintf(f, "[run]\ndir = %s/run\n", tmp), fclose(f);
        int len = snprintf(cmd, sizeof cmd, "%s --checkpoint %s --subnetworks %s --set data.path=%s", eval_path, weights,
                           out_json, dir);
        for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
            len += snprintf(cmd + len, sizeof cmd - (size_t)len, " --set %s", sets[i]);
        snprintf(cmd + len, sizeof cmd - (size_t)len, " %s > %s 2>&1", ini, log);
        int rc = system(cmd);
        CHECK(rc == 0, "bioflex-eval --subnetworks exited %d (see %s)", rc, log);
        check_json(out_json, &want, "bioflex-eval --subnetworks");
        size_t n = 0;
        char *text = bf_test_read_file(log, &n);
        CHECK(text && strstr(text, "subnetworks: 2 tasks, 2 gated layers") && strstr(text, "  core_net.1 ") &&
                  strstr(text, "subnetworks -> "),
              "bioflex-eval prints one line per gated layer:\n%s", text ? text : "");
        free(text);
        snprintf(cmd, sizeof cmd, "%s --checkpoint %s --subnetworks %s --set data.path=%s --set run.device=cpu "
                 "--set data.dataset=multi_mnist --set butd.network=fc --set butd.hidden=24 --set butd.depth=2 %s > %s 2>&1",
                 eval_path, plain_weights, out_json, dir, ini, log);
        rc = system(cmd);
        text = bf_test_read_file(log, &n);
        CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2 && text && strstr(text, "[butd] guided = false"),
              "bioflex-eval refuses --subnetworks for an unguided net with status 2: %d\n%s", rc, text ? text : "");
        free(text);
    }
    bf_butd_subnetworks_free(&want);
    bf_butd_destroy(net);
    bf_butd_destroy(plain);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    char tmp[] = "/tmp/bioflex_test_butd_subnetworks_XXXXXX";
    if (!mkdtemp(tmp)) bf_test_skip("cannot make a temporary directory");
    test_mask_overlap();
    test_known_masks(b);
    test_conv_net(b);
    test_batch_norm(b);
    test_evaluate_checkpoint(b, tmp);
    bf_backend_destroy(b);
    bf_test_remove_dir_if_passed(tmp);
    return bf_test_finish();
}

/* butd_subnetworks.c - the sub-network analysis of a guided BU-TD network (include/bioflex/butd.h,
 * spec section 3: the reference's Analyze hook and results.py). Each task's instruction pass opens
 * a set of GaLU gates per level, its mask 1[td > 0]; per level the tasks' active fractions and
 * every pair's binary cosine and Jaccard index say how much the instructed sub-networks overlap.
 * The instruction pass takes no image, so one sample per task, in evaluation mode (the TD
 * batch-norm copies' running statistics), gives each task's masks exactly. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"

/* The two overlaps from the counts: |a|, |b| and |a AND b|. */
static void overlap_from_counts(long na, long nb, long both, double *cosine, double *jaccard) {
    *cosine = na > 0 && nb > 0 ? (double)both / sqrt((double)na * (double)nb) : 0.0;
    long either = na + nb - both;
    *jaccard = either > 0 ? (double)both / (double)either : 0.0;
}

void bf_butd_mask_overlap(const uint8_t *a, const uint8_t *b, size_t n, double *cosine, double *jaccard) {
    long na = 0, nb = 0, both = 0;
    for (size_t i = 0; i < n; i++) {
        na += a[i] != 0;
        nb += b[i] != 0;
        both += a[i] && b[i];
    }
    overlap_from_counts(na, nb, both, cosine, jaccard);
}

static void level_free(bf_butd_subnetwork_level *l) {
    free(l->masks);
    free(l->active);
    free(l->fraction);
    free(l->common);
    free(l->cosine);
    free(l->jaccard);
}

void bf_butd_subnetworks_free(bf_butd_subnetworks *r) {
    if (!r) return;
    for (int i = 0; r->levels && i < r->num_levels; i++) level_free(&r->levels[i]);
    free(r->levels);
    level_free(&r->whole);
    memset(r, 0, sizeof *r);
}

static bf_status level_alloc(bf_butd_subnetwork_level *l, const char *name, int units, int tasks, int with_masks) {
    snprintf(l->name, sizeof l->name, "%s", name);
    l->units = units;
    size_t pairs = (size_t)tasks * tasks;
    l->masks = with_masks ? calloc((size_t)tasks * units, 1) : NULL;
    l->active = calloc((size_t)tasks, sizeof *l->active);
    l->fraction = calloc((size_t)tasks, sizeof *l->fraction);
    l->common = calloc(pairs, sizeof *l->common);
    l->cosine = calloc(pairs, sizeof *l->cosine);
    l->jaccard = calloc(pairs, sizeof *l->jaccard);
    if ((with_masks && !l->masks) || !l->active || !l->fraction || !l->common || !l->cosine || !l->jaccard)
        return bf_error(BF_ERR_OOM, "butd subnetworks: out of host memory");
    return BF_OK;
}

/* The fractions, cosines and Jaccard indices from the active and common counts. */
static void level_finish(bf_butd_subnetwork_level *l, int tasks) {
    for (int a = 0; a < tasks; a++) {
        l->fraction[a] = l->units > 0 ? (double)l->active[a] / l->units : 0.0;
        for (int b = 0; b < tasks; b++)
            overlap_from_counts(l->active[a], l->active[b], l->common[a * tasks + b], &l->cosine[a * tasks + b],
                                &l->jaccard[a * tasks + b]);
    }
}

/* The gated levels, bottom to top: (name, TD buffer, units). A block's inner level comes first. */
typedef struct gated_level {
    char name[BF_NAME_MAX];
    const float *td;
    int units;
} gated_level;

static int gated_levels(const bf_butd_net *net, gated_level *out) {
    int count = 0, core_top = net->num_layers - 1;
    for (int i = 0; i < core_top; i++) {
        const bf_butd_layer *l = &net->layers[i];
        if (l->kind == BF_BUTD_BLOCK) {
            if (out) {
                snprintf(out[count].name, sizeof out[count].name, "%.80s.conv1", l->name);
                out[count].td = l->td_u, out[count].units = l->out_size;
            }
            count++;
        }
        if (out) {
            snprintf(out[count].name, sizeof out[count].name, "%s", l->name);
            out[count].td = net->td[i + 1], out[count].units = l->out_size;
        }
        count++;
    }
    return count;
}

static bf_status compute(bf_butd_net *net, bf_butd_subnetworks *out, const gated_level *g, float *host) {
    const int T = out->num_tasks;
    for (int i = 0; i < out->num_levels; i++) BF_TRY(level_alloc(&out->levels[i], g[i].name, g[i].units, T, 1));
    BF_TRY(level_alloc(&out->whole, "all", 0, T, 0));
    BF_TRY(bf_butd_set_batch(net, 1));
    for (int k = 0; k < T; k++) {
        const int32_t task = k;
        BF_TRY(bf_butd_instruct(net, &task));
        for (int i = 0; i < out->num_levels; i++) {
            bf_butd_subnetwork_level *l = &out->levels[i];
            BF_TRY(bf_to_host(net->backend, host, g[i].td, (size_t)l->units * sizeof(float)));
            uint8_t *m = l->masks + (size_t)k * l->units;
            for (int u = 0; u < l->units; u++) {
                m[u] = host[u] > 0.0f; /* the GaLU gate: open where the counter neuron is positive */
                l->active[k] += m[u];
            }
        }
    }
    for (int i = 0; i < out->num_levels; i++) {
        bf_butd_subnetwork_level *l = &out->levels[i];
        for (int a = 0; a < T; a++)
            for (int b = a; b < T; b++) {
                const uint8_t *ma = l->masks + (size_t)a * l->units, *mb = l->masks + (size_t)b * l->units;
                int both = 0;
                for (int u = 0; u < l->units; u++) both += ma[u] & mb[u];
                l->common[a * T + b] = l->common[b * T + a] = both;
            }
        level_finish(l, T);
        out->whole.units += l->units;
        for (int a = 0; a < T; a++) {
            out->whole.active[a] += l->active[a];
            for (int b = 0; b < T; b++) out->whole.common[a * T + b] += l->common[a * T + b];
        }
    }
    level_finish(&out->whole, T);
    return BF_OK;
}

bf_status bf_butd_subnetworks_compute(bf_butd_net *net, bf_butd_subnetworks *out) {
    memset(out, 0, sizeof *out);
    if (!net->opt.guided)
        return bf_error(BF_ERR_CONFIG, "butd subnetworks: the network is not guided ([butd] guided = false): only a "
                                       "guided network has an instruction pass whose TD activity selects a sub-network");
    out->num_tasks = net->opt.num_tasks;
    out->num_levels = gated_levels(net, NULL);
    gated_level *g = calloc((size_t)out->num_levels + 1, sizeof *g);
    out->levels = calloc((size_t)out->num_levels + 1, sizeof *out->levels);
    int widest = 1;
    for (int i = 0; i < net->num_layers; i++)
        if (net->layers[i].out_size > widest) widest = net->layers[i].out_size;
    float *host = malloc((size_t)widest * sizeof(float));
    bf_status s = g && out->levels && host ? BF_OK : bf_error(BF_ERR_OOM, "butd subnetworks: out of host memory");
    const int batch = net->batch, training = net->training;
    if (s == BF_OK) {
        gated_levels(net, g);
        bf_butd_set_training(net, 0); /* the TD batch-norm copies' running statistics, as evaluation */
        s = compute(net, out, g, host);
        bf_butd_set_training(net, training);
        if (batch > 0 && batch != net->batch) {
            bf_status restored = bf_butd_set_batch(net, batch);
            if (s == BF_OK) s = restored;
        }
    }
    free(g);
    free(host);
    if (s != BF_OK) bf_butd_subnetworks_free(out);
    return s;
}

static cJSON *level_json(const bf_butd_subnetwork_level *l, int T) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", l->name);
    cJSON_AddNumberToObject(o, "units", l->units);
    cJSON *active = cJSON_AddArrayToObject(o, "active_units"), *fraction = cJSON_AddArrayToObject(o, "active_fraction");
    for (int k = 0; k < T; k++) {
        cJSON_AddItemToArray(active, cJSON_CreateNumber(l->active[k]));
        cJSON_AddItemToArray(fraction, cJSON_CreateNumber(l->fraction[k]));
    }
    cJSON *pairs = cJSON_AddArrayToObject(o, "pairs");
    for (int a = 0; a < T; a++)
        for (int b = a + 1; b < T; b++) {
            cJSON *p = cJSON_CreateObject();
            int tasks[2] = {a, b};
            cJSON_AddItemToObject(p, "tasks", cJSON_CreateIntArray(tasks, 2));
            cJSON_AddNumberToObject(p, "common_units", l->common[a * T + b]);
            cJSON_AddNumberToObject(p, "cosine", l->cosine[a * T + b]);
            cJSON_AddNumberToObject(p, "jaccard", l->jaccard[a * T + b]);
            cJSON_AddItemToArray(pairs, p);
        }
    return o;
}

bf_status bf_butd_subnetworks_write_json(const bf_butd_subnetworks *r, FILE *f) {
    const int T = r->num_tasks;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "tasks", T);
    cJSON_AddStringToObject(root, "mask", "1[td > 0]: the TD activity of the instruction pass (evaluation mode, one "
                                          "sample per task; the pass reads no image), the GaLU gates it opens");
    cJSON_AddStringToObject(root, "cosine", "|a AND b| / sqrt(|a| |b|), 0 when either mask is empty");
    cJSON_AddStringToObject(root, "jaccard", "|a AND b| / |a OR b|, 0 when both masks are empty");
    cJSON *levels = cJSON_AddArrayToObject(root, "layers");
    for (int i = 0; i < r->num_levels; i++) cJSON_AddItemToArray(levels, level_json(&r->levels[i], T));
    cJSON_AddItemToObject(root, "all_layers", level_json(&r->whole, T));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return bf_error(BF_ERR_OOM, "butd subnetworks: out of host memory");
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    free(text);
    return ok ? BF_OK : bf_error(BF_ERR_IO, "butd subnetworks: cannot write the JSON");
}

/* min / mean / max of n values, as text. */
static void spread(char *buf, size_t size, const double *v, int n) {
    double lo = n ? v[0] : 0, hi = lo, sum = 0;
    for (int i = 0; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
        sum += v[i];
    }
    snprintf(buf, size, "%.3f/%.3f/%.3f", lo, n ? sum / n : 0.0, hi);
}

static void print_level(const bf_butd_subnetwork_level *l, int T, FILE *out) {
    char active[64], cosine[64], jaccard[64];
    if (T == 2) {
        snprintf(active, sizeof active, "%.3f %.3f", l->fraction[0], l->fraction[1]);
        snprintf(cosine, sizeof cosine, "%.3f", l->cosine[1]);
        snprintf(jaccard, sizeof jaccard, "%.3f", l->jaccard[1]);
    } else {
        int pairs = T * (T - 1) / 2, n = 0;
        double *c = calloc((size_t)(pairs ? pairs : 1) * 2, sizeof(double));
        if (!c) return;
        for (int a = 0; a < T; a++)
            for (int b = a + 1; b < T; b++, n++) c[n] = l->cosine[a * T + b], c[pairs + n] = l->jaccard[a * T + b];
        spread(active, sizeof active, l->fraction, T);
        spread(cosine, sizeof cosine, c, pairs);
        spread(jaccard, sizeof jaccard, c + pairs, pairs);
        free(c);
    }
    fprintf(out, "  %-24s %8d units  active %s  cosine %s  jaccard %s\n", l->name, l->units, active, cosine, jaccard);
}

void bf_butd_subnetworks_print(const bf_butd_subnetworks *r, FILE *out) {
    fprintf(out, "subnetworks: %d tasks, %d gated layers (active: TD instruction activity > 0; %s)\n", r->num_tasks,
            r->num_levels, r->num_tasks == 2 ? "each task's fraction, the pair's cosine and Jaccard"
                                             : "min/mean/max over the tasks and over the pairs");
    for (int i = 0; i < r->num_levels; i++) print_level(&r->levels[i], r->num_tasks, out);
    print_level(&r->whole, r->num_tasks, out);
}

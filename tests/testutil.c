#include "testutil.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "bioflex/model.h"
#include "bioflex/safetensors.h"
#include "fsutil.h"

static int tests_passed, tests_failed;

void bf_test_record(int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        tests_passed++;
        return;
    }
    tests_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int bf_test_finish(void) {
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed == 0 && tests_passed > 0 ? 0 : 1;
}

void bf_test_remove_dir_if_passed(const char *dir) {
    if (tests_failed > 0) {
        fprintf(stderr, "kept %s for its logs\n", dir);
        return;
    }
    if (bf_remove_tree(dir) != BF_OK) fprintf(stderr, "could not remove %s: %s\n", dir, bf_last_error());
}

void bf_test_skip(const char *why) {
    printf("SKIPPED: %s\n", why);
    exit(77);
}

double bf_test_last_json_number(const char *path, const char *key) {
    char line[8192], needle[64];
    snprintf(needle, sizeof needle, "\"%s\":", key);
    FILE *f = fopen(path, "r");
    double v = -1;
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, needle);
        if (at) v = strtod(at + strlen(needle), NULL);
    }
    if (f) fclose(f);
    return v;
}

/* loss and accuracy of each step's last train line, indexed by step (NaN: none); the steps logged. */
enum { TRAIN_LINES_MAX_STEP = 100000 };
static int read_train_lines(const char *path, double *loss, double *accuracy) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    for (int i = 0; i < TRAIN_LINES_MAX_STEP; i++) loss[i] = accuracy[i] = NAN;
    char line[8192];
    int steps = 0;
    while (fgets(line, sizeof line, f)) {
        const char *step = strstr(line, "\"step\":"), *l = strstr(line, "\"loss\":"), *a = strstr(line, "\"accuracy\":");
        if (!strstr(line, "\"type\":\"train\"") || !step || !l || !a) continue;
        long k = strtol(step + 7, NULL, 10);
        if (k < 0 || k >= TRAIN_LINES_MAX_STEP) continue;
        steps += isnan(loss[k]);
        loss[k] = strtod(l + 7, NULL), accuracy[k] = strtod(a + 11, NULL);
    }
    fclose(f);
    return steps;
}

int bf_test_train_lines_differ(const char *a, const char *b, int *steps) {
    double *v = malloc(4 * TRAIN_LINES_MAX_STEP * sizeof *v);
    if (!v) return *steps = -1, 1;
    double *loss_a = v, *acc_a = v + TRAIN_LINES_MAX_STEP, *loss_b = v + 2 * TRAIN_LINES_MAX_STEP,
           *acc_b = v + 3 * TRAIN_LINES_MAX_STEP;
    int differ = 0;
    *steps = read_train_lines(a, loss_a, acc_a);
    if (*steps < 0 || read_train_lines(b, loss_b, acc_b) < 0) differ = 1, *steps = -1;
    for (int k = 0; k < TRAIN_LINES_MAX_STEP && *steps >= 0; k++)
        if (isnan(loss_a[k]) != isnan(loss_b[k]) || (!isnan(loss_a[k]) && (loss_a[k] != loss_b[k] || acc_a[k] != acc_b[k])))
            differ++;
    free(v);
    return differ;
}

double bf_test_model_xent(bf_model *m, const float *x, const int32_t *labels, float *losses) {
    const float *logits = NULL;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    if (m->backend->ops->softmax_xent(m->backend, m->batch, m->num_classes, logits, labels, 0, 1.0f / m->batch, losses,
                                      NULL) != BF_OK)
        return NAN;
    double sum = 0;
    for (int i = 0; i < m->batch; i++) sum += losses[i];
    return sum / m->batch;
}

float *bf_test_model_xent_grads(bf_model *m, const float *x, const int32_t *labels) {
    const float *logits = NULL;
    float *losses = malloc((size_t)m->batch * sizeof(float));
    float *dlogits = malloc((size_t)m->batch * m->num_classes * sizeof(float));
    float *grads = malloc(m->num_param_floats * sizeof(float));
    int ok = losses && dlogits && grads && bf_model_forward(m, x, &logits) == BF_OK &&
             m->backend->ops->softmax_xent(m->backend, m->batch, m->num_classes, logits, labels, 0, 1.0f / m->batch,
                                           losses, dlogits) == BF_OK &&
             bf_model_backward(m, dlogits) == BF_OK;
    if (ok) memcpy(grads, m->grad_data, m->num_param_floats * sizeof(float));
    free(losses), free(dlogits);
    if (!ok) free(grads);
    return ok ? grads : NULL;
}

double bf_test_weights_max_abs_diff(const char *path_a, const char *path_b) {
    bf_st_file *a = NULL, *b = NULL;
    CHECK_OK(bf_safetensors_read(path_a, &a));
    CHECK_OK(bf_safetensors_read(path_b, &b));
    double d = 0;
    for (int i = 0; a && b && i < bf_safetensors_count(a); i++) {
        const bf_st_tensor *ta = bf_safetensors_at(a, i), *tb = bf_safetensors_find(b, ta->name);
        if (!tb || ta->dtype != BF_DTYPE_F32 || ta->nbytes != tb->nbytes) continue;
        for (size_t k = 0; k < ta->nbytes / sizeof(float); k++)
            d = fmax(d, fabs((double)((const float *)ta->data)[k] - ((const float *)tb->data)[k]));
    }
    bf_safetensors_close(a);
    bf_safetensors_close(b);
    return d;
}

double bf_test_max_violation(const float *a, const float *b, size_t n, double atol, double rtol,
                             size_t *worst_index) {
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double x = a[i], y = b[i];
        if (isnan(x) || isnan(y)) {
            worst = INFINITY;
            wi = i;
            break;
        }
        double m = fabs(x) > fabs(y) ? fabs(x) : fabs(y);
        double v = fabs(x - y) / (atol + rtol * m);
        if (v > worst) {
            worst = v;
            wi = i;
        }
    }
    if (worst_index) *worst_index = wi;
    return worst;
}

void bf_test_fill_uniform(float *x, size_t n, float lo, float hi, unsigned long seed) {
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * bf_uniform(seed, i);
}

float *bf_test_upload(bf_backend *b, const float *host, size_t n) {
    void *p = NULL;
    if (bf_alloc(b, n * sizeof(float) + 16, &p) != BF_OK) return NULL;
    if (host && bf_to_device(b, p, host, n * sizeof(float)) != BF_OK) return NULL;
    return p;
}

float *bf_test_alloc(bf_backend *b, size_t n) {
    float *p = bf_test_upload(b, NULL, n);
    if (!p) {
        fprintf(stderr, "test: no backend memory for %zu floats\n", n);
        exit(1);
    }
    return p;
}

float *bf_test_uniform(bf_backend *b, size_t n, float lo, float hi, unsigned long seed) {
    float *host = malloc(n * sizeof(float) + 16), *p = bf_test_alloc(b, n);
    if (!host) exit(1);
    bf_test_fill_uniform(host, n, lo, hi, seed);
    if (bf_to_device(b, p, host, n * sizeof(float)) != BF_OK) exit(1);
    free(host);
    return p;
}

float *bf_test_download(bf_backend *b, const float *dev, size_t n) {
    float *h = malloc(n * sizeof(float) + 16);
    if (h && bf_to_host(b, h, dev, n * sizeof(float)) != BF_OK) {
        free(h);
        return NULL;
    }
    return h;
}

char *bf_test_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (!buf) {
        fclose(f);
        return NULL;
    }
    *n = fread(buf, 1, (size_t)size, f);
    buf[*n] = '\0';
    fclose(f);
    return buf;
}

void *bf_test_calloc(size_t bytes) {
    void *p = calloc(1, bytes + 16);
    if (!p) {
        fprintf(stderr, "test: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

float *bf_test_eighths(size_t n, float lo, int levels, unsigned seed) {
    float *p = bf_test_calloc(n * sizeof(float));
    srand(seed);
    for (size_t i = 0; i < n; i++) p[i] = lo + (float)(rand() % levels) / 8.0f;
    return p;
}

bf_model_config bf_test_cnn_config(int channels, int hidden, float dropout) {
    bf_config defaults;
    bf_config_defaults(&defaults);
    bf_model_config mc = defaults.model;
    mc.arch = BF_ARCH_CNN;
    mc.channels[0] = channels;
    mc.num_channels = 1;
    mc.hidden = hidden;
    mc.dropout = dropout;
    return mc;
}

pid_t bf_test_fork_capped(size_t extra) {
    pid_t child = fork();
    if (child != 0) return child;
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (!statm || fscanf(statm, "%ld", &pages) != 1) pages = 0;
    if (statm) fclose(statm);
    const rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)extra;
    struct rlimit limit = {cap, cap};
    setrlimit(RLIMIT_AS, &limit);
    return 0;
}

int bf_test_child_passed(pid_t child, int *status) {
    *status = -1;
    if (child > 0) waitpid(child, status, 0);
    return child > 0 && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

void bf_test_procedural_run_config(bf_config *cfg, const char *dir) {
    bf_config_defaults(cfg);
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s", dir);
    cfg->run.device = BF_DEVICE_SEL_CPU;
    cfg->run.epochs = 1;
    cfg->run.threads = 1;
    cfg->data.dataset = BF_DATASET_PROCEDURAL;
    cfg->data.procedural_train = 128;
    cfg->data.procedural_test = 32;
    cfg->data.procedural_size = 12;
    cfg->data.procedural_classes = 4;
    cfg->data.batch_size = 32;
    cfg->model.arch = BF_ARCH_CNN;
    cfg->model.channels[0] = 4;
    cfg->model.channels[1] = 8;
    cfg->model.num_channels = 2;
    cfg->model.hidden = 16;
    cfg->model.dropout = 0;
    cfg->optim.optimizer = BF_OPTIM_SGD;
    cfg->optim.lr = 0.05f;
    cfg->optim.weight_decay = 1e-3f;
}

bf_dataset bf_test_noise_images(uint8_t *pixels, int32_t *labels, int samples, int s, int k, bf_split split) {
    for (int i = 0; i < samples * s * s; i++) pixels[i] = (uint8_t)(bf_uniform(3, (uint64_t)i) * 255);
    for (int i = 0; i < samples; i++) labels[i] = i % k;
    bf_dataset d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "noise images");
    d.num_samples = samples, d.c = 1, d.h = d.w = s, d.num_classes = k;
    d.mean[0] = 0.5f, d.std[0] = 0.25f;
    d.pixels = pixels, d.labels = labels, d.split = split;
    return d;
}

void bf_test_noise_open(bf_test_noise *t, int samples, int s, int k, bf_split split, int batch, int in_order) {
    memset(t, 0, sizeof *t);
    t->pixels = bf_test_calloc((size_t)samples * s * s);
    t->labels = bf_test_calloc((size_t)samples * sizeof(int32_t));
    t->d = bf_test_noise_images(t->pixels, t->labels, samples, s, k, split);
    CHECK_OK(bf_backend_create_cpu(1, &t->b));
    if (t->b) t->loader = bf_test_loader(&t->d, split, batch, in_order);
}

void bf_test_noise_close(bf_test_noise *t) {
    bf_loader_destroy(t->loader);
    if (t->b) bf_backend_destroy(t->b);
    free(t->pixels), free(t->labels);
}

bf_loader *bf_test_loader(const bf_dataset *d, bf_split split, int batch, int in_order) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.batch_size = batch;
    bf_loader_options lo = bf_loader_options_from_config(&cfg, split);
    if (in_order) lo.shuffle = 0;
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &lo, &l));
    return l;
}

double bf_test_logits_dot(struct bf_model *m, const float *x, const float *g, size_t n) {
    const float *logits = NULL;
    if (bf_model_forward(m, x, &logits) != BF_OK) return NAN;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)g[i] * logits[i];
    return sum;
}

double bf_test_logits_dot_slope(struct bf_model *m, const float *x, const float *g, size_t n, float *v, float h) {
    const float keep = *v;
    *v = keep + h;
    double up = bf_test_logits_dot(m, x, g, n);
    *v = keep - h;
    double down = bf_test_logits_dot(m, x, g, n);
    *v = keep;
    return (up - down) / (2.0 * h);
}

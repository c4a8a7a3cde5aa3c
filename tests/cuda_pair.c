/* cuda_pair.c - see cuda_pair.h. */
#include "cuda_pair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/model.h"
#include "testutil.h"

static bf_backend *cpu, *gpu;
static unsigned long next_seed;

int pair_open(bf_backend **cpu_out, bf_backend **gpu_out, unsigned long first_seed) {
    if (!bf_cuda_built()) bf_test_skip("bioflex was built without the CUDA backend");
    if (bf_cuda_device_count() == 0) bf_test_skip("no CUDA device");
    CHECK_OK(bf_backend_create_cpu(0, cpu_out));
    /* the reference's convolutions (im2col), whatever the build's default; test_conv_onednn holds
     * oneDNN's to them */
    if (*cpu_out) CHECK_OK(bf_cpu_set_conv_library(*cpu_out, BF_CPU_CONV_IM2COL));
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, gpu_out));
    pair_setup(*cpu_out, *gpu_out, first_seed);
    return *cpu_out && *gpu_out;
}

void pair_setup(bf_backend *cpu_backend, bf_backend *gpu_backend, unsigned long first_seed) {
    cpu = cpu_backend;
    gpu = gpu_backend;
    next_seed = first_seed;
}

unsigned long pair_next_seed(void) { return next_seed++; }

pair pair_from(const float *host, size_t n) {
    pair p = {bf_test_upload(cpu, host, n), bf_test_upload(gpu, host, n), n};
    if (!p.c || !p.g) {
        fprintf(stderr, "cannot allocate %zu floats: %s\n", n, bf_last_error());
        exit(1);
    }
    return p;
}

pair pair_rand(size_t n, float lo, float hi) {
    float *h = malloc(n * sizeof(float) + 16);
    if (!h) exit(1);
    bf_test_fill_uniform(h, n, lo, hi, pair_next_seed());
    pair p = pair_from(h, n);
    free(h);
    return p;
}

pair pair_out(size_t n) { return pair_rand(n, 1e3f, 2e3f); }

void pair_free(pair *p) {
    bf_free(cpu, p->c);
    bf_free(gpu, p->g);
    p->c = p->g = NULL;
}

int pair_download(const char *what, pair p, float **cpu_host, float **gpu_host) {
    *cpu_host = bf_test_download(cpu, p.c, p.n);
    *gpu_host = bf_test_download(gpu, p.g, p.n);
    CHECK(*cpu_host && *gpu_host, "%s: download failed: %s", what, bf_last_error());
    return *cpu_host && *gpu_host;
}

void check_repeats(const char *what, const float *first, const float *again, size_t n) {
    float *a = bf_test_download(gpu, first, n), *b = bf_test_download(gpu, again, n);
    CHECK(a && b && memcmp(a, b, n * sizeof(float)) == 0, "%s: two GPU runs differ", what);
    free(a);
    free(b);
}

void pair_compare(const char *what, pair p, double atol, double rtol) {
    float *a = NULL, *b = NULL;
    if (pair_download(what, p, &a, &b)) {
        size_t worst = 0;
        double v = bf_test_max_violation(a, b, p.n, atol, rtol, &worst);
        printf("  %-44s max violation %8.3g  (n=%zu)\n", what, v, p.n);
        CHECK(v <= 1.0, "%s: element %zu cpu %.9g cuda %.9g (violation %.3g)", what, worst, a[worst], b[worst], v);
    }
    free(a);
    free(b);
}

void pair_compare_exact(const char *what, pair p) {
    float *a = NULL, *b = NULL;
    if (pair_download(what, p, &a, &b)) {
        size_t bad = 0, first = 0;
        for (size_t i = 0; i < p.n; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
                if (!bad) first = i;
                bad++;
            }
        printf("  %-44s %zu of %zu elements differ\n", what, bad, p.n);
        CHECK(bad == 0, "%s: %zu elements differ, first %zu: cpu %.9g cuda %.9g", what, bad, first, a[first], b[first]);
    }
    free(a);
    free(b);
}

struct bf_model *pair_finalize_model(struct bf_model *m, int n) {
    m->input_gradient = 1;
    bf_status s = bf_model_finalize(m);
    CHECK(s == BF_OK, "finalize on %s: %s", m->backend->kind == BF_DEVICE_CUDA ? "CUDA" : "CPU", bf_last_error());
    if (s != BF_OK) {
        bf_model_destroy(m);
        return NULL;
    }
    m->training = 1, m->batch = n;
    return m;
}

void pair_compare_model_passes(struct bf_model *cpu, struct bf_model *gpu, pair x, pair dlogits) {
    const float *lc = NULL, *lg = NULL;
    CHECK_OK(bf_model_forward(cpu, x.c, &lc));
    CHECK_OK(bf_model_forward(gpu, x.g, &lg));
    pair_compare("logits", (pair){(float *)lc, (float *)lg, dlogits.n}, 1e-5, 1e-4);
    CHECK_OK(bf_model_backward(cpu, dlogits.c));
    CHECK_OK(bf_model_backward(gpu, dlogits.g));
    pair_compare("image gradient", (pair){cpu->dinput, gpu->dinput, x.n}, 1e-6, 1e-3);
    for (int p = 0; p < cpu->num_params; p++) {
        const bf_param *q = &cpu->params[p];
        pair_compare(q->name, (pair){cpu->grad_data + q->offset, gpu->grad_data + q->offset, q->count}, 1e-6, 1e-3);
    }
}

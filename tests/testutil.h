/* testutil.h - a tiny assertion library for the ctest programs.
 * CHECK(cond, ...) records a failure with file:line and a message and goes on; CHECK_CLOSE compares
 * floats with an absolute+relative tolerance. A program returns bf_test_finish(), which prints
 * "N passed, M failed" and exits non-zero on any failure. bf_test_skip() exits with 77, which ctest
 * reports as skipped. */
#ifndef BIOFLEX_TESTUTIL_H
#define BIOFLEX_TESTUTIL_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "bioflex/config.h"
#include "bioflex/data.h"
#include "bioflex/ops.h"

void bf_test_record(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int bf_test_finish(void);
void bf_test_skip(const char *why) __attribute__((noreturn));
/* A test's scratch directory: removed when every check so far passed, kept (and named on stderr)
 * after a failure, so that the logs in it can be read. Call it just before bf_test_finish(). */
void bf_test_remove_dir_if_passed(const char *dir);

#define CHECK(cond, ...) bf_test_record(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_OK(expr)                                                                       \
    do {                                                                                     \
        bf_status chk_s_ = (expr);                                                           \
        bf_test_record(chk_s_ == BF_OK, __FILE__, __LINE__, "%s -> %s: %s", #expr,          \
                       bf_status_name(chk_s_), bf_last_error());                             \
    } while (0)
#define CHECK_CLOSE(a, b, atol, rtol, what)                                                  \
    do {                                                                                     \
        double chk_a_ = (a), chk_b_ = (b);                                                   \
        double chk_d_ = chk_a_ > chk_b_ ? chk_a_ - chk_b_ : chk_b_ - chk_a_;                 \
        double chk_m_ = (chk_a_ > 0 ? chk_a_ : -chk_a_) > (chk_b_ > 0 ? chk_b_ : -chk_b_) ? (chk_a_ > 0 ? chk_a_ : -chk_a_) : (chk_b_ > 0 ? chk_b_ : -chk_b_); \
        bf_test_record(chk_d_ <= (atol) + (rtol)*chk_m_, __FILE__, __LINE__,                 \
                       "%s: %.9g vs %.9g (diff %.3g)", what, chk_a_, chk_b_, chk_d_);        \
    } while (0)

/* Largest |a-b| / (atol + rtol*max(|a|,|b|)) over two host arrays; <= 1 means all close. */
double bf_test_max_violation(const float *a, const float *b, size_t n, double atol, double rtol,
                             size_t *worst_index);

/* The largest |a - b| over the float tensors two safetensors files (weights) share; CHECKs that
 * both read. */
double bf_test_weights_max_abs_diff(const char *path_a, const char *path_b);

/* The number after "key": on the last line of a file (metrics.jsonl) that has it; -1 when none. */
double bf_test_last_json_number(const char *path, const char *key);

/* The train lines of two metrics.jsonl files compared step by step on "loss" and "accuracy" (a step
 * logged twice: its last line, as tools/plot_metrics.py reads it): the number of steps that differ
 * or are in one file only; *steps gets how many steps file a logged, -1 when it cannot be read. */
int bf_test_train_lines_differ(const char *a, const char *b, int *steps);

/* A whole file, NUL-terminated (n = its size); NULL when it cannot be read. free() it. */
char *bf_test_read_file(const char *path, size_t *n);

/* The loss sum over i of g[i] * logits[i] of a forward of x, in double (NaN when the forward fails),
 * and its central difference in one value *v (a parameter or an element of x) with step h, *v
 * restored after: the finite-difference checks of layers whose gradient comes from g as dlogits.
 * The model's backend must be the CPU's (host memory). */
struct bf_model;
double bf_test_logits_dot(struct bf_model *m, const float *x, const float *g, size_t n);
double bf_test_logits_dot_slope(struct bf_model *m, const float *x, const float *g, size_t n, float *v, float h);

/* The mean cross-entropy of a forward of x against labels (training mode: batch statistics), in
 * double, with losses (host memory, m->batch floats) as scratch; NaN when a call fails. The model's
 * backend must be the CPU's: the central-difference checks of whole models. */
double bf_test_model_xent(struct bf_model *m, const float *x, const int32_t *labels, float *losses);
/* The analytic side of those checks: forward of x, the mean cross-entropy's backward, and a malloc'd
 * copy of the parameter gradients (NULL when a call fails). */
float *bf_test_model_xent_grads(struct bf_model *m, const float *x, const int32_t *labels);

/* Deterministic uniform floats in [lo, hi) for test inputs. */
void bf_test_fill_uniform(float *x, size_t n, float lo, float hi, unsigned long seed);
/* Zeroed host memory (16 spare bytes); a test without memory stops. */
void *bf_test_calloc(size_t bytes);
/* n multiples of 1/8 in [lo, lo + levels/8), from rand() seeded with seed: exact sums, common ties. */
float *bf_test_eighths(size_t n, float lo, int levels, unsigned seed);

/* Copies host data into a new buffer of the backend / back to a new host buffer (free() it). */
float *bf_test_upload(bf_backend *b, const float *host, size_t n);
float *bf_test_download(bf_backend *b, const float *dev, size_t n);
/* A new backend buffer of n floats: uninitialised (alloc), or bf_test_fill_uniform's values; the
 * program exits (status 1) when the backend has no memory for it. */
float *bf_test_alloc(bf_backend *b, size_t n);
float *bf_test_uniform(bf_backend *b, size_t n, float lo, float hi, unsigned long seed);

/* A dataset of `samples` one-channel s x s noise images held in the caller's arrays (pixels:
 * samples*s*s bytes, labels: samples), labels i % k, normalised with mean 0.5 and std 0.25. */
bf_dataset bf_test_noise_images(uint8_t *pixels, int32_t *labels, int samples, int s, int k, bf_split split);

/* A loader over d as bf_loader_options_from_config gives the split with the [data] defaults and
 * batches of `batch`, in file order when in_order; CHECKs its creation (NULL when it failed). */
bf_loader *bf_test_loader(const bf_dataset *d, bf_split split, int batch, int in_order);

/* What the analysis tests start from: a CPU backend (one thread) and a loader over `samples` noise
 * images (bf_test_noise_images, held here) of the split in batches of `batch`, in file order when
 * in_order. Either pointer is NULL when its creation failed (CHECKed); bf_test_noise_close frees all. */
typedef struct bf_test_noise {
    bf_backend *b;
    bf_loader *loader;
    bf_dataset d;              /* the loader reads it: the struct must stay where it is */
    uint8_t *pixels;
    int32_t *labels;
} bf_test_noise;
void bf_test_noise_open(bf_test_noise *t, int samples, int s, int k, bf_split split, int batch, int in_order);
void bf_test_noise_close(bf_test_noise *t);

/* The [model] defaults with arch = cnn: one conv of `channels`, a hidden layer of `hidden`, the
 * given dropout; the caller changes what else it needs. */
bf_model_config bf_test_cnn_config(int channels, int hidden, float dropout);

/* fork(), with the child's address space allowed to grow by only `extra` bytes past what it has
 * mapped (relative: a sanitizer build maps terabytes of shadow first), so that an allocation the
 * code under test must never make fails there rather than succeed; and the wait for that child:
 * 1 when it exited with status 0 (*status: the wait status, -1 without a child). */
pid_t bf_test_fork_capped(size_t extra);
int bf_test_child_passed(pid_t child, int *status);

/* A whole run's config, the defaults but: run dir `dir`, one epoch on one CPU thread of 128 procedural
 * 12x12 training images of 4 classes (32 test) in batches of 32, a CNN of 4 and 8 channels and a
 * hidden layer of 16 without dropout, SGD at lr 0.05 with weight decay 1e-3. */
void bf_test_procedural_run_config(bf_config *cfg, const char *dir);

#endif

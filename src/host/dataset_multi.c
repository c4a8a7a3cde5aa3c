/* dataset_multi.c - Multi-MNIST generated from any IDX digit set (Sener & Koltun 2018, as the
 * BU-TD reference builds it in data/multi_mnist_loader.py, after yobibyte/unitary-scalarization-dmtl).
 *
 * Sample i of a split pairs digit i (upper left, task 0) with a partner digit j drawn uniformly
 * from the same split (lower right, task 1); bf_multi_digits_compose overlays them. Splits as the
 * reference: train = the first 50,000 images of the IDX training file (its last 10,000 are the
 * reference's unused "val"), test = the whole t10k file.
 *
 * One deliberate difference: the reference draws partners with unseeded numpy randomness, so
 * every machine gets different pairs. Here partner j of sample i is a pure function of
 * ([data] multi_seed, split, i) through the counter RNG (BF_STREAM_MULTI), so a config reproduces its data
 * exactly; generation is cheap (no cache file). Limits apply to the generated samples; partners
 * are always drawn from the whole split. Normalisation uses the MNIST statistics (0.1307, 0.3081)
 * for both digit sets, as the reference does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/hash.h"
#include "dataset_tasks.h"

#define DIGIT 28                /* side of a source digit and of the result */
#define CANVAS 36               /* side of the composition canvas */
#define OFFSET 6                /* the right digit's top-left corner on the canvas */
#define MULTI_TRAIN_MAX 50000   /* the reference's training split: MNIST-train indices 0..49,999 */

void bf_multi_digits_compose(const uint8_t *left, const uint8_t *right, uint8_t *out) {
    uint8_t canvas[CANVAS * CANVAS];
    memset(canvas, 0, sizeof canvas);
    for (int y = 0; y < DIGIT; y++)
        for (int x = 0; x < DIGIT; x++) canvas[y * CANVAS + x] = left[y * DIGIT + x];
    for (int y = 0; y < DIGIT; y++) {
        for (int x = 0; x < DIGIT; x++) {
            uint8_t *p = &canvas[(y + OFFSET) * CANVAS + x + OFFSET], v = right[y * DIGIT + x];
            if (v > *p) *p = v; /* the overlap takes the pixelwise max; elsewhere *p is 0 */
        }
    }
    /* PIL's NEAREST resize samples source pixel floor((x + 0.5) * CANVAS / DIGIT). */
    for (int y = 0; y < DIGIT; y++) {
        int sy = (2 * y + 1) * CANVAS / (2 * DIGIT);
        for (int x = 0; x < DIGIT; x++) {
            int sx = (2 * x + 1) * CANVAS / (2 * DIGIT);
            out[y * DIGIT + x] = canvas[sy * CANVAS + sx];
        }
    }
}

bf_status bf_multi_digits_open(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out) {
    int fashion = cfg->dataset == BF_DATASET_MULTI_FASHION_MNIST;
    /* The digit set itself, whole and unmodified: same directory, no limits or subsets. */
    bf_data_config digits_cfg = *cfg;
    digits_cfg.dataset = fashion ? BF_DATASET_FASHION_MNIST : BF_DATASET_MNIST;
    digits_cfg.train_limit = digits_cfg.test_limit = 0;
    digits_cfg.subset = 0;
    digits_cfg.gray_to_rgb = 0;
    bf_dataset *digits = NULL;
    BF_TRY(bf_dataset_open(&digits_cfg, seed, split, &digits));
    if (digits->c != 1 || digits->h != DIGIT || digits->w != DIGIT) {
        bf_status s = bf_error(BF_ERR_FORMAT, "%s: multi-digit images need 1x%dx%d digits, %s has %dx%dx%d",
                               bf_dataset_name(cfg->dataset), DIGIT, DIGIT, digits->name, digits->c, digits->h, digits->w);
        bf_dataset_free(digits);
        return s;
    }

    int source = digits->num_samples;
    if (split == BF_SPLIT_TRAIN && source > MULTI_TRAIN_MAX) source = MULTI_TRAIN_MAX;
    int limit = split == BF_SPLIT_TRAIN ? cfg->train_limit : cfg->test_limit;
    int n = limit > 0 && limit < source ? limit : source;

    bf_dataset *d = calloc(1, sizeof *d);
    if (d) {
        d->pixels = malloc((size_t)n * DIGIT * DIGIT);
        d->labels = malloc((size_t)n * sizeof *d->labels);
        d->task_labels = malloc((size_t)n * 2 * sizeof *d->task_labels);
    }
    if (!d || !d->pixels || !d->labels || !d->task_labels) {
        bf_dataset_free(d);
        bf_dataset_free(digits);
        return bf_error(BF_ERR_OOM, "%s: cannot allocate %d images", bf_dataset_name(cfg->dataset), n);
    }
    snprintf(d->name, sizeof d->name, "%s", bf_dataset_name(cfg->dataset));
    d->split = split;
    d->num_samples = n;
    d->c = 1;
    d->h = d->w = DIGIT;
    d->num_tasks = 2;
    d->task_classes = d->num_classes = 10;
    d->mean[0] = 0.1307f, d->std[0] = 0.3081f;
    for (int ch = 1; ch < 3; ch++) d->mean[ch] = 0.0f, d->std[ch] = 1.0f;

    uint64_t stream = bf_seed_derive((uint64_t)seed, BF_STREAM_MULTI, (uint64_t)split);
    const size_t plane = DIGIT * DIGIT;
    for (int i = 0; i < n; i++) {
        int j = (int)(bf_uniform(stream, (uint64_t)i) * (float)source);
        if (j >= source) j = source - 1;
        bf_multi_digits_compose(digits->pixels + (size_t)i * plane, digits->pixels + (size_t)j * plane,
                                d->pixels + (size_t)i * plane);
        d->task_labels[2 * (size_t)i] = digits->labels[i];
        d->task_labels[2 * (size_t)i + 1] = digits->labels[j];
        d->labels[i] = digits->labels[i];
    }
    bf_dataset_free(digits);
    *out = d;
    return BF_OK;
}

/* dataset_tasks.h - multi-task datasets, opened by bf_dataset_open (dataset.c) for the BU-TD
 * networks' guided (instructed) training: Multi-MNIST from any IDX digit set (dataset_multi.c) and
 * CelebA's 40 attributes (dataset_celeba.c). Both fill bf_dataset's num_tasks, task_classes and
 * task_labels (see data.h). Internal to the library. */
#ifndef BIOFLEX_DATASET_TASKS_H
#define BIOFLEX_DATASET_TASKS_H

#include "bioflex/data.h"

/* Multi-MNIST / Multi-Fashion-MNIST (cfg->dataset = multi_mnist | multi_fashion_mnist): 1x28x28,
 * task 0 = the upper-left digit, task 1 = the lower-right digit, 10 classes each. The partner
 * digits are drawn from (seed, split); bf_dataset_open passes [data] multi_seed. */
bf_status bf_multi_digits_open(const bf_data_config *cfg, long seed, bf_split split, bf_dataset **out);

/* The Multi-MNIST composition of two 28x28 digits: a 36x36 canvas with `left` at [0:28, 0:28] and
 * `right` at [6:34, 6:34] (pixelwise max where they overlap), resized to 28x28 by nearest
 * neighbour as PIL does (source pixel floor((x + 0.5) * 36 / 28)). Exposed for tests. */
void bf_multi_digits_compose(const uint8_t *left, const uint8_t *right, uint8_t *out);

/* CelebA (cfg->dataset = celeba): 3x218x178 aligned faces, 40 binary attribute tasks. train =
 * partition 0, test = partition 2 (torchvision's 'train' and 'test'; partition 1 'valid' unused). */
bf_status bf_celeba_open(const bf_data_config *cfg, bf_split split, bf_dataset **out);

#endif

/* image.h - JPEG datasets: decoding with libjpeg-turbo, crops and antialiased resizing.
 *
 * A file-backed dataset (imagefolder, imagenet100, imagenet) holds sorted file paths and labels,
 * never pixels. A loader worker turns one path into one training image in three steps, all with
 * buffers it owns and reuses (no allocation per image once they have grown):
 *   1. bf_image_plan: choose the crop (RandomResizedCrop, squash, or resize-shorter + centre crop)
 *      from the image size and the counter RNG stream of (seed, epoch, position);
 *   2. bf_jpeg_decode_region: decode only that crop's rows and (iMCU-aligned) columns, at the
 *      largest DCT scaling 1/8..1/1 that keeps the crop at least as large as the output;
 *   3. bf_image_resample: antialiased separable triangle filter to the output size, plus flip.
 * A file that is not a decodable JPEG (PNG under a .JPEG name, truncated, corrupt, empty) is
 * reported as BF_ERR_FORMAT with the path; the loader skips it and takes another sample. */
#ifndef BIOFLEX_IMAGE_H
#define BIOFLEX_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "bioflex/data.h"
#include "bioflex/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An 8-bit RGB image, rows of w*3 bytes (HWC). `cap` is the allocated size in bytes. */
typedef struct bf_image_u8 {
    uint8_t *pixels;
    int w, h;
    size_t cap;
} bf_image_u8;

/* A region of an image in pixel coordinates (fractional: crops come from real-valued areas). */
typedef struct bf_rect {
    double x, y, w, h;
} bf_rect;

/* ------------------------------------------------------------------ decoding (jpeg_decode.c) */

/* One decompressor and its file buffer, reused across images; one per worker thread. */
typedef struct bf_jpeg_decoder bf_jpeg_decoder;

bf_status bf_jpeg_decoder_create(bf_jpeg_decoder **out);
void bf_jpeg_decoder_free(bf_jpeg_decoder *dec);

/* Reads a whole file into the decoder's buffer and parses the JPEG header: *w, *h are the
 * image size. Errors: BF_ERR_IO (cannot read), BF_ERR_FORMAT (empty, not a JPEG, bad header). */
bf_status bf_jpeg_load(bf_jpeg_decoder *dec, const char *path, int *w, int *h);

/* Decodes the loaded image's region `crop` (source pixels) to RGB. The result covers at least the
 * crop at scale *scale (a power of two 1, 1/2, 1/4 or 1/8, the smallest one keeping the crop at
 * least min_w x min_h pixels); *in_crop is the crop in the coordinates of `out`. Grayscale,
 * CMYK/YCCK and progressive files come out as RGB. Truncated or corrupt data is BF_ERR_FORMAT. */
bf_status bf_jpeg_decode_region(bf_jpeg_decoder *dec, bf_rect crop, int min_w, int min_h, bf_image_u8 *out,
                                bf_rect *in_crop, double *scale);

/* Writes an RGB (components 3) or gray (1) image as a JPEG file of the given quality;
 * progressive = 1 writes a progressive JPEG. */
bf_status bf_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int components, int quality,
                        int progressive);

/* ------------------------------------------------------ synthetic datasets (jpeg_synth.c) */

typedef enum bf_synth_layout { BF_SYNTH_IMAGEFOLDER = 0, BF_SYNTH_KAGGLE = 1, BF_SYNTH_TINYIMAGENET = 2 } bf_synth_layout;

typedef struct bf_jpeg_synth_options {
    bf_synth_layout layout;     /* imagefolder: train/, val/; kaggle: train.X1, train.X2, val.X, Labels.json;
                                   tinyimagenet: train/<wnid>/images/, val/images/ + val/val_annotations.txt */
    int classes;
    int train_per_class, val_per_class;
    int width, height;          /* 0 = realistic mixed sizes (mostly 500x375); tinyimagenet: 64x64 */
    int quality;                /* JPEG quality, e.g. 90 */
    int edge_cases;             /* plant the 8 edge-case files in class 0 of train (4 undecodable) */
    uint64_t seed;
    int progress;               /* print progress on stderr */
} bf_jpeg_synth_options;

#define BF_SYNTH_BAD_FILES 4    /* png, truncated, corrupt, empty */
#define BF_SYNTH_EDGE_FILES 8   /* those plus gray, cmyk, ycck, progressive */

/* Writes a synthetic ImageNet-like tree of JPEGs under root (created if needed). */
bf_status bf_jpeg_synth_tree(const char *root, const bf_jpeg_synth_options *opt);

/* --------------------------------------------------------------- transforms (image_transform.c) */

typedef enum bf_image_transform {
    BF_TRANSFORM_SQUASH = 0,        /* the whole image resized to size x size (FlexNet Exp 2/4) */
    BF_TRANSFORM_RANDOM_RESIZED_CROP = 1, /* torchvision RandomResizedCrop(size, scale, ratio) */
    BF_TRANSFORM_CENTER = 2         /* resize the shorter side to resize, then centre crop size */
} bf_image_transform;

typedef struct bf_image_plan_options {
    bf_image_transform transform;
    int size;                       /* output side */
    int resize;                     /* CENTER: the shorter side before the crop */
    float scale_min, scale_max;     /* RANDOM_RESIZED_CROP: area fraction range */
    float ratio_min, ratio_max;     /* RANDOM_RESIZED_CROP: aspect ratio range */
    int flip;                       /* random horizontal flip with probability 1/2 */
} bf_image_plan_options;

typedef struct bf_image_plan {
    bf_rect crop;                   /* in source pixels */
    int flip;
} bf_image_plan;

/* The crop and flip of one sample from an image of w x h, with random numbers from the counter
 * stream `seed` (bf_uniform(seed, 0..)). torchvision's RandomResizedCrop: 10 attempts at a
 * random area and log-uniform ratio, then the central crop clamped to the ratio range. */
bf_image_plan bf_image_plan_make(const bf_image_plan_options *opt, int w, int h, uint64_t seed);

/* Per-thread buffers of the resampler, grown as needed and reused: fixed-point filter weights (and
 * the SIMD layout of the horizontal ones), the first source pixel of each output column and row,
 * the first pass's rows and one row of accumulators. Zero-initialise. */
typedef struct bf_resampler {
    int16_t *coefs;
    int32_t *pairs;
    int *bounds;
    int16_t *rows;
    int32_t *acc;
    size_t coefs_cap, pairs_cap, bounds_cap, rows_cap, acc_cap;
} bf_resampler;

void bf_resampler_free(bf_resampler *r);

/* Resamples region `crop` of `src` to out_w x out_h RGB (HWC) with an antialiasing triangle
 * filter whose support grows with the downscale factor (Pillow's BILINEAR reduce), optionally
 * mirrored left-right. */
bf_status bf_image_resample(bf_resampler *r, const bf_image_u8 *src, bf_rect crop, int out_w, int out_h, int flip,
                            uint8_t *out);

/* HWC RGB bytes (`pixels` of them) -> CHW floats in [0, 1], three planes of `pixels`: each value is
 * byte * (1.0f / 255.0f), the same float whichever code path (SIMD or not) computes it. */
void bf_image_to_chw_float(const uint8_t *hwc, size_t pixels, float *chw);

/* Grows an image buffer to hold w x h RGB (keeps it when large enough). */
bf_status bf_image_reserve(bf_image_u8 *img, int w, int h);

/* ------------------------------------------------------ file-backed datasets (dataset_imagefolder.c) */

struct bf_image_files {
    char **paths;                   /* num_samples paths, sorted within each class */
    char *path_storage;             /* one block holding all path strings */
    char (*class_names)[64];        /* num_classes names (WNIDs or folder names) */
    bf_image_plan_options plan;     /* this split's transform */
};

/* Opens imagefolder, imagenet100 (Kaggle layout) or imagenet (ILSVRC): see the file's header. */
bf_status bf_dataset_open_images(const bf_data_config *cfg, bf_split split, bf_dataset **out);
void bf_image_files_free(bf_image_files *f);
/* Classes an imagefolder config will have (class_list lines, else folders in path/train); 0 when
 * neither can be read. For --dry-run, which opens no dataset. */
int bf_image_class_count(const bf_data_config *cfg);

/* One worker's decoder and buffers for bf_image_load_sample. */
typedef struct bf_image_worker {
    bf_jpeg_decoder *decoder;
    bf_image_u8 decoded;
    bf_resampler resampler;
    uint8_t *out;                   /* size*size*3 */
} bf_image_worker;

bf_status bf_image_worker_init(bf_image_worker *w, int size);
void bf_image_worker_free(bf_image_worker *w);

/* Decodes and transforms sample `index` of a file-backed dataset into dst (float CHW in [0, 1]),
 * random choices from `seed`. BF_ERR_FORMAT / BF_ERR_IO for a bad file (the message names it). */
bf_status bf_image_load_sample(const bf_dataset *d, int index, uint64_t seed, bf_image_worker *w, float *dst);
/* The same sample as bytes, RGB HWC (d->h * d->w * 3), written straight into dst (a loader's
 * uint8 ring slot): bf_image_load_sample's floats are exactly these bytes times 1/255. */
bf_status bf_image_load_sample_u8(const bf_dataset *d, int index, uint64_t seed, bf_image_worker *w, uint8_t *dst);

#ifdef __cplusplus
}
#endif
#endif

/* jpeg_decode.c - JPEG decoding and encoding with libjpeg-turbo's libjpeg API (see image.h).
 *
 * Why the libjpeg API and not TurboJPEG: Debian's libjpeg-turbo 2.1 has no tj3 cropping, while
 * the libjpeg API offers everything a RandomResizedCrop needs - DCT scaling (scale_num/8), column
 * cropping (jpeg_crop_scanline, widened to iMCU boundaries) and row skipping (jpeg_skip_scanlines).
 *
 * Errors. libjpeg calls error_exit on a fatal error and expects it not to return: ours longjmps
 * back to the decode call, which reports BF_ERR_FORMAT with the library's message and the path.
 * Warnings that mean the pixels are wrong (premature end of data, corrupt entropy data) are
 * recorded by emit_message and turn an otherwise "successful" decode into BF_ERR_FORMAT, so a
 * truncated file is skipped rather than trained on as grey bands.
 *
 * Limits. A corrupt or hostile header can ask for a huge image (65000 x 65000 in a 1 KB file: a
 * progressive decode buffers every coefficient, gigabytes) or thousands of empty scans (seconds of
 * CPU each): images over MAX_PIXELS, libjpeg's own memory over MAX_DECODER_MEMORY and files of more
 * than MAX_SCANS scans are refused as format errors, so the loader skips and counts them. */
#include "bioflex/image.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#define MAX_PIXELS ((uint64_t)1 << 27)          /* 134 megapixels: far above any photograph in ImageNet */
#define MAX_DECODER_MEMORY ((long)512 << 20)     /* libjpeg's buffers for one image */
#define MAX_SCANS 500                            /* a progressive JPEG has about 10; TurboJPEG's limit */

typedef struct decoder_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    int bad_data;             /* a warning that means corrupt or missing data was issued */
    char message[JMSG_LENGTH_MAX];
} decoder_error;

struct bf_jpeg_decoder {
    struct jpeg_decompress_struct cinfo;
    decoder_error err;
    unsigned char *file;      /* the loaded file */
    size_t file_size, file_cap;
    char path[BF_PATH_MAX + 64];
    uint8_t *row;             /* one CMYK row (4 channels) before conversion */
    size_t row_cap;
    struct jpeg_progress_mgr progress; /* counts the scans as libjpeg reads them */
};

static void on_error_exit(j_common_ptr cinfo) {
    decoder_error *e = (decoder_error *)cinfo->err;
    cinfo->err->format_message(cinfo, e->message);
    longjmp(e->jump, 1);
}

/* msg_level -1 is a warning. These codes mean the decoded pixels are not the image's. */
static void on_message(j_common_ptr cinfo, int msg_level) {
    decoder_error *e = (decoder_error *)cinfo->err;
    if (msg_level != -1) return;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE || code == JWRN_ARITH_BAD_CODE ||
        code == JWRN_MUST_RESYNC || code == JWRN_NOT_SEQUENTIAL || code == JWRN_BOGUS_PROGRESSION) {
        if (!e->bad_data) cinfo->err->format_message(cinfo, e->message);
        e->bad_data = 1;
    }
}

/* Called by libjpeg as it works through the file: a decode still reading scans past MAX_SCANS is
 * abandoned as an error exit would be. */
static void on_progress(j_common_ptr cinfo) {
    if (!cinfo->is_decompressor || ((j_decompress_ptr)cinfo)->input_scan_number <= MAX_SCANS) return;
    decoder_error *e = (decoder_error *)cinfo->err;
    snprintf(e->message, sizeof e->message, "more than %d scans (a progressive JPEG has about 10)", MAX_SCANS);
    longjmp(e->jump, 1);
}

bf_status bf_jpeg_decoder_create(bf_jpeg_decoder **out) {
    bf_jpeg_decoder *dec = calloc(1, sizeof *dec);
    if (!dec) return bf_error(BF_ERR_OOM, "cannot allocate a JPEG decoder");
    dec->cinfo.err = jpeg_std_error(&dec->err.base);
    dec->err.base.error_exit = on_error_exit;
    dec->err.base.emit_message = on_message;
    if (setjmp(dec->err.jump)) {
        free(dec);
        return bf_error(BF_ERR_INTERNAL, "libjpeg: cannot create a decompressor");
    }
    jpeg_create_decompress(&dec->cinfo);
    dec->cinfo.mem->max_memory_to_use = MAX_DECODER_MEMORY; /* past it: "backing store not supported" */
    dec->progress.progress_monitor = on_progress;
    dec->cinfo.progress = &dec->progress;
    *out = dec;
    return BF_OK;
}

void bf_jpeg_decoder_free(bf_jpeg_decoder *dec) {
    if (!dec) return;
    jpeg_destroy_decompress(&dec->cinfo);
    free(dec->file);
    free(dec->row);
    free(dec);
}

static bf_status read_file(bf_jpeg_decoder *dec, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    dec->file_size = 0;
    for (;;) {
        if (dec->file_size == dec->file_cap) {
            size_t cap = dec->file_cap ? dec->file_cap * 2 : (size_t)1 << 18;
            unsigned char *p = realloc(dec->file, cap);
            if (!p) {
                fclose(f);
                return bf_error(BF_ERR_OOM, "%s: cannot allocate %zu bytes", path, cap);
            }
            dec->file = p;
            dec->file_cap = cap;
        }
        size_t got = fread(dec->file + dec->file_size, 1, dec->file_cap - dec->file_size, f);
        dec->file_size += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) return bf_error(BF_ERR_IO, "%s: read error", path);
    if (dec->file_size == 0) return bf_error(BF_ERR_FORMAT, "%s: empty file (0 bytes)", path);
    return BF_OK;
}

bf_status bf_jpeg_load(bf_jpeg_decoder *dec, const char *path, int *w, int *h) {
    snprintf(dec->path, sizeof dec->path, "%s", path);
    BF_TRY(read_file(dec, path));
    struct jpeg_decompress_struct *ci = &dec->cinfo;
    dec->err.bad_data = 0;
    if (setjmp(dec->err.jump)) {
        jpeg_abort_decompress(ci);
        return bf_error(BF_ERR_FORMAT, "%s: not a decodable JPEG: %s", path, dec->err.message);
    }
    jpeg_mem_src(ci, dec->file, (unsigned long)dec->file_size);
    jpeg_read_header(ci, TRUE);
    if ((uint64_t)ci->image_width * ci->image_height > MAX_PIXELS) {
        jpeg_abort_decompress(ci);
        return bf_error(BF_ERR_FORMAT, "%s: a %ux%u JPEG is over the %llu pixels bioflex decodes (a corrupt header?)",
                        path, ci->image_width, ci->image_height, (unsigned long long)MAX_PIXELS);
    }
    *w = (int)ci->image_width;
    *h = (int)ci->image_height;
    return BF_OK;
}

bf_status bf_image_reserve(bf_image_u8 *img, int w, int h) {
    size_t need = (size_t)w * h * 3;
    if (need > img->cap) {
        uint8_t *p = realloc(img->pixels, need);
        if (!p) return bf_error(BF_ERR_OOM, "cannot allocate a %dx%d image", w, h);
        img->pixels = p;
        img->cap = need;
    }
    img->w = w;
    img->h = h;
    return BF_OK;
}

/* Adobe CMYK JPEGs store inverted ink (255 = no ink), which is what Photoshop writes; without the
 * Adobe marker the values are plain ink amounts. RGB = (1 - C)(1 - K) in both cases. */
static void cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int n, int inverted) {
    for (int i = 0; i < n; i++) {
        int c = cmyk[4 * i], m = cmyk[4 * i + 1], y = cmyk[4 * i + 2], k = cmyk[4 * i + 3];
        if (!inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        rgb[3 * i] = (uint8_t)((c * k + 127) / 255);
        rgb[3 * i + 1] = (uint8_t)((m * k + 127) / 255);
        rgb[3 * i + 2] = (uint8_t)((y * k + 127) / 255);
    }
}

bf_status bf_jpeg_decode_region(bf_jpeg_decoder *dec, bf_rect crop, int min_w, int min_h, bf_image_u8 *out,
                                bf_rect *in_crop, double *scale) {
    struct jpeg_decompress_struct *ci = &dec->cinfo;
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    /* The smallest power-of-two scale that keeps the crop at least the output size: DCT scaling
     * skips most of the IDCT work, and the resampler still antialiases the rest of the way. */
    int num = 8;
    while (num > 1 && crop.w * (num / 2) / 8.0 >= min_w && crop.h * (num / 2) / 8.0 >= min_h) num /= 2;
    ci->scale_num = (unsigned)num;
    ci->scale_denom = 8;
    ci->dct_method = JDCT_ISLOW; /* accurate, as Pillow and torchvision decode */
    ci->do_fancy_upsampling = TRUE;
    ci->do_block_smoothing = FALSE;
    if (setjmp(dec->err.jump)) {
        jpeg_abort_decompress(ci);
        return bf_error(BF_ERR_FORMAT, "%s: not a decodable JPEG: %s", dec->path, dec->err.message);
    }
    jpeg_start_decompress(ci);
    /* exactly num/8: libjpeg maps each 8x8 block onto num x num pixels and rounds the output size
     * up, its last column or row a partial block, so output_width / image_width would be a little
     * more than the scale wherever the size is not a multiple of 8/num (and stretch the crop) */
    double s = (double)ci->scale_num / (double)ci->scale_denom;
    int ow = (int)ci->output_width, oh = (int)ci->output_height;
    /* The crop in output pixels, widened to whole pixels and clamped to the image. */
    int x0 = (int)(crop.x * s), y0 = (int)(crop.y * s);
    int x1 = (int)((crop.x + crop.w) * s + 0.999999), y1 = (int)((crop.y + crop.h) * s + 0.999999);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > ow) x1 = ow;
    if (y1 > oh) y1 = oh;
    if (x1 <= x0) x1 = x0 + 1 <= ow ? x0 + 1 : ow, x0 = x1 - 1;
    if (y1 <= y0) y1 = y0 + 1 <= oh ? y0 + 1 : oh, y0 = y1 - 1;
    JDIMENSION xoff = (JDIMENSION)x0, width = (JDIMENSION)(x1 - x0);
    /* Only the crop's columns (xoff moves left to an iMCU edge). Not for progressive files:
     * libjpeg-turbo 2.1 returns wrong pixels (26 levels off, found by tests/test_jpeg_pipeline.c)
     * for some cropped progressive images, so those decode full rows (they are rare in ImageNet). */
    if (width < (JDIMENSION)ow && !ci->progressive_mode) jpeg_crop_scanline(ci, &xoff, &width);
    else xoff = 0, width = (JDIMENSION)ow;
    int rows = y1 - y0;
    bf_status st = bf_image_reserve(out, (int)width, rows);
    if (st == BF_OK && cmyk && dec->row_cap < (size_t)width * 4) {
        uint8_t *p = realloc(dec->row, (size_t)width * 4);
        if (!p) st = bf_error(BF_ERR_OOM, "cannot allocate a JPEG row");
        else dec->row = p, dec->row_cap = (size_t)width * 4;
    }
    if (st != BF_OK) {
        jpeg_abort_decompress(ci);
        return st;
    }
    if (y0 > 0) jpeg_skip_scanlines(ci, (JDIMENSION)y0);
    for (int r = 0; r < rows;) {
        /* RGB rows go straight into `out`, several per call (libjpeg produces a row group of up to
         * max_v_samp_factor rows at a time, and each call has its overhead); CMYK goes one row at
         * a time through dec->row to be converted. */
        JSAMPROW dst[16];
        int want = cmyk ? 1 : rows - r < 16 ? rows - r : 16;
        for (int k = 0; k < want; k++) dst[k] = cmyk ? dec->row : out->pixels + (size_t)(r + k) * width * 3;
        JDIMENSION got = jpeg_read_scanlines(ci, dst, (JDIMENSION)want);
        if (got == 0) break; /* suspended: cannot happen with a memory source, but never loop */
        if (cmyk) cmyk_to_rgb(dec->row, out->pixels + (size_t)r * width * 3, (int)width, ci->saw_Adobe_marker);
        r += (int)got;
    }
    int bad = dec->err.bad_data;
    /* Rows below the crop are not needed; aborting leaves the decompressor ready for the next file. */
    jpeg_abort_decompress(ci);
    if (bad) return bf_error(BF_ERR_FORMAT, "%s: corrupt or truncated JPEG data: %s", dec->path, dec->err.message);
    in_crop->x = crop.x * s - (double)xoff;
    in_crop->y = crop.y * s - (double)y0;
    in_crop->w = crop.w * s;
    in_crop->h = crop.h * s;
    *scale = s;
    return BF_OK;
}

/* ------------------------------------------------------------------------------- encoding */

typedef struct encoder_error {
    struct jpeg_error_mgr base;
    jmp_buf jump;
} encoder_error;

static void on_encode_error(j_common_ptr cinfo) { longjmp(((encoder_error *)cinfo->err)->jump, 1); }

bf_status bf_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int components, int quality,
                        int progressive) {
    FILE *f = fopen(path, "wb");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    struct jpeg_compress_struct ci;
    encoder_error err;
    ci.err = jpeg_std_error(&err.base);
    err.base.error_exit = on_encode_error;
    if (setjmp(err.jump)) {
        char message[JMSG_LENGTH_MAX];
        ci.err->format_message((j_common_ptr)&ci, message);
        jpeg_destroy_compress(&ci);
        fclose(f);
        return bf_error(BF_ERR_IO, "%s: JPEG encoding failed: %s", path, message);
    }
    jpeg_create_compress(&ci);
    jpeg_stdio_dest(&ci, f);
    ci.image_width = (JDIMENSION)w;
    ci.image_height = (JDIMENSION)h;
    ci.input_components = components;
    ci.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 4 ? JCS_CMYK : JCS_RGB;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, quality, TRUE);
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)ci.next_scanline * w * components);
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    if (fclose(f) != 0) return bf_error(BF_ERR_IO, "%s: write error", path);
    return BF_OK;
}

/* metrics.c - metrics.jsonl lines built with cJSON, and the human-readable progress. */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>

#include "fsutil.h"

bf_status bf_metrics_open(bf_metrics_log *log, const char *run_dir, int progress) {
    memset(log, 0, sizeof *log);
    BF_TRY(bf_mkdir_p(run_dir));
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    log->jsonl = fopen(path, "a");
    if (!log->jsonl) return bf_error(BF_ERR_IO, "cannot open %s for appending: %s", path, strerror(errno));
    log->progress = progress;
    snprintf(log->dir, sizeof log->dir, "%s", run_dir);
    return BF_OK;
}

void bf_metrics_close(bf_metrics_log *log) {
    bf_metrics_break_line(log);
    if (log->jsonl) fclose(log->jsonl);
    if (log->spikes) fclose(log->spikes);
    log->jsonl = log->spikes = NULL;
}

void bf_metrics_break_line(bf_metrics_log *log) {
    if (log->line_open) fputc('\n', stderr);
    log->line_open = 0;
}

static void write_json(bf_metrics_log *log, cJSON *obj) {
    char *text = cJSON_PrintUnformatted(obj);
    if (text && log->jsonl) {
        fprintf(log->jsonl, "%s\n", text);
        fflush(log->jsonl);
    }
    cJSON_free(text);
    cJSON_Delete(obj);
}

void bf_metrics_start(bf_metrics_log *log, int resumed, int epoch, long step) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "start");
    cJSON_AddBoolToObject(o, "resumed", resumed);
    cJSON_AddNumberToObject(o, "epoch", epoch);
    cJSON_AddNumberToObject(o, "from_step", (double)step); /* not "step": readers keying on it pass over */
    write_json(log, o);
}

static void format_duration(double s, char *out, size_t n) {
    long t = s > 0 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
}

double bf_peak_tflops(int cc_major, int cc_minor, int sms, int clock_khz, bf_precision precision) {
    /* dense FLOPs per clock per SM: an FMA is 2; from NVIDIA's architecture whitepapers (A100: 64
     * fp32 lanes, 512 TF32 FMAs; GA10x and Ada: 128 fp32 lanes, 128 TF32 FMAs; H100: 128 fp32
     * lanes, 1024 TF32 FMAs) */
    static const struct { int major, minor, fp32, tf32; } table[] = {
        {8, 0, 128, 1024}, {8, 6, 256, 256}, {8, 9, 256, 256}, {9, 0, 256, 2048},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].major == cc_major && table[i].minor == cc_minor) {
            int per_clock = precision != BF_PRECISION_FP32 ? table[i].tf32 : table[i].fp32; /* the convs' peak */
            return (double)sms * clock_khz * 1e3 * per_clock / 1e12;
        }
    return 0;
}

void bf_metrics_train(bf_metrics_log *log, const bf_train_metrics *m, FILE *text) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "train");
    cJSON_AddNumberToObject(o, "epoch", m->epoch + 1); /* the epoch in progress, as the progress line says */
    cJSON_AddNumberToObject(o, "step", (double)m->step);
    cJSON_AddNumberToObject(o, "loss", m->loss);
    cJSON_AddNumberToObject(o, "accuracy", m->accuracy);
    cJSON_AddNumberToObject(o, "lr", m->lr);
    if (m->grad_norm >= 0) cJSON_AddNumberToObject(o, "grad_norm", m->grad_norm);
    cJSON_AddNumberToObject(o, "ms_per_step", m->ms_per_step);
    cJSON_AddNumberToObject(o, "images_per_s", m->images_per_s);
    cJSON_AddNumberToObject(o, "data_wait_ms", m->data_wait_ms);
    /* comm_exposed_ms: in data-parallel runs (mpirun, --gpus, [run] force_nccl), the mean per step
     * of this interval of the communication the step waited for, on rank 0:
     *   - NCCL: GPU time the compute stream was held by its wait for the gradient buckets (what the
     *     backward pass did not hide), from timing events read at the interval's synchronisation;
     *   - MPI: host wall time inside the blocking gradient all-reduce.
     * sync_bn's all-reduces are not counted. The plain single-process run has no communication and
     * no such field (absent rather than 0, so 0 means a data-parallel run that hid it all). */
    if (m->comm_exposed_ms) cJSON_AddNumberToObject(o, "comm_exposed_ms", *m->comm_exposed_ms);
    if (m->skipped_images) cJSON_AddNumberToObject(o, "skipped_images", (double)*m->skipped_images);
    if (m->tflops > 0) cJSON_AddNumberToObject(o, "model_tflops", m->tflops); /* BU-TD runs do not count FLOPs */
    if (m->mfu > 0) cJSON_AddNumberToObject(o, "mfu", m->mfu); /* GPU runs on a known architecture */
    /* rank 0's GPU: every buffer, scratch and workspace of its backend, not the CUDA context */
    if (m->device_peak_gib) cJSON_AddNumberToObject(o, "device_peak_gib", *m->device_peak_gib);
    if (m->num_flex > 0) {
        /* per flex layer, in layer order, and their means (flexnet.md section 6) */
        cJSON *ratios = cJSON_AddObjectToObject(o, "conv_ratio");
        cJSON *homogeneity = cJSON_AddObjectToObject(o, "homogeneity");
        double mean_ratio = 0, mean_homogeneity = 0;
        for (int i = 0; i < m->num_flex; i++) {
            cJSON_AddNumberToObject(ratios, m->flex_names[i], m->flex_conv_ratio[i]);
            cJSON_AddNumberToObject(homogeneity, m->flex_names[i], m->flex_homogeneity[i]);
            mean_ratio += m->flex_conv_ratio[i] / m->num_flex;
            mean_homogeneity += m->flex_homogeneity[i] / m->num_flex;
        }
        cJSON_AddNumberToObject(o, "mean_conv_ratio", mean_ratio);
        cJSON_AddNumberToObject(o, "mean_homogeneity", mean_homogeneity);
    }
    if (m->num_neuron > 0) {
        /* per neuron layer: spikes per neuron and step, and the fraction silent over all steps */
        cJSON *rates = cJSON_AddObjectToObject(o, "firing_rate");
        cJSON *silent = cJSON_AddObjectToObject(o, "silent");
        double mean_rate = 0;
        for (int i = 0; i < m->num_neuron; i++) {
            cJSON_AddNumberToObject(rates, m->neuron_names[i], m->firing_rate[i]);
            cJSON_AddNumberToObject(silent, m->neuron_names[i], m->silent[i]);
            mean_rate += m->firing_rate[i] / m->num_neuron;
        }
        cJSON_AddNumberToObject(o, "mean_firing_rate", mean_rate);
    }
    write_json(log, o);

    char eta[32];
    format_duration(m->eta_s, eta, sizeof eta);
    char line[256];
    snprintf(line, sizeof line, "epoch %d/%d  step %ld/%ld  loss %.4f  acc %5.1f%%  lr %.3g  %.0f img/s  wait %.1f ms  ETA %s",
             m->epoch + 1, m->epochs, m->step_in_epoch, m->steps_per_epoch, m->loss, 100 * m->accuracy, m->lr,
             m->images_per_s, m->data_wait_ms, eta);
    if (log->progress) {
        fprintf(stderr, "\r%-110s", line);
        fflush(stderr);
        log->line_open = 1;
    } else if (text) {
        fprintf(text, "%s\n", line);
        fflush(text);
    }
}

void bf_metrics_eval(bf_metrics_log *log, int epoch, long step, double loss, double top1, double top5, double balanced_top1, int samples,
                     const char *split, FILE *text) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "eval");
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "epoch", epoch);
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "loss", loss);
    cJSON_AddNumberToObject(o, "top1", top1);
    if (top5 >= 0) cJSON_AddNumberToObject(o, "top5", top5); /* < 0: not computed (BU-TD's one accuracy) */
    if (balanced_top1 >= 0) cJSON_AddNumberToObject(o, "balanced_top1", balanced_top1);
    cJSON_AddNumberToObject(o, "samples", samples);
    write_json(log, o);
    bf_metrics_break_line(log);
    if (text) {
        char balanced[48] = "", top5_text[32] = "";
        if (balanced_top1 >= 0) snprintf(balanced, sizeof balanced, "  balanced %.2f%%", 100 * balanced_top1);
        if (top5 >= 0) snprintf(top5_text, sizeof top5_text, "  top-5 %.2f%%", 100 * top5);
        fprintf(text, "eval after epoch %d: %s loss %.4f  top-1 %.2f%%%s%s  (%d images)\n", epoch, split, loss, 100 * top1,
                top5_text, balanced, samples);
        fflush(text);
    }
}

void bf_metrics_eval_health(bf_metrics_log *log, int epoch, long step, const char *split, double max_abs_logit,
                            double max_loss, int nonfinite_losses, int samples, int num_flex,
                            const char *const *flex_names, const double *flex_bn_min_var, FILE *text) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "eval_health");
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "epoch", epoch);
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "max_abs_logit", max_abs_logit); /* NaN: null */
    cJSON_AddNumberToObject(o, "max_loss", max_loss);
    cJSON_AddNumberToObject(o, "nonfinite_losses", nonfinite_losses);
    if (num_flex > 0) {
        cJSON *v = cJSON_AddObjectToObject(o, "flex_bn_min_running_var");
        for (int i = 0; i < num_flex; i++) cJSON_AddNumberToObject(v, flex_names[i], flex_bn_min_var[i]);
    }
    write_json(log, o);
    if (text && (nonfinite_losses > 0 || !(max_abs_logit <= 1e4))) {
        fprintf(text, "warning: evaluation after epoch %d (%s): %d of %d images gave a non-finite loss, the largest "
                "|logit| was %.4g (a few exploding outputs behind the top-1%s)\n", epoch, split, nonfinite_losses,
                samples, max_abs_logit, num_flex > 0 ? "; eval_health in metrics.jsonl has the smallest running "
                "variance of the batch-norm after each flex layer" : "");
        fflush(text);
    }
}

void bf_metrics_spikes(bf_metrics_log *log, long step, const char *layer, int T, int k, const float *spikes) {
    if (!log->spikes) {
        char path[1100];
        snprintf(path, sizeof path, "%s/spikes.jsonl", log->dir);
        log->spikes = fopen(path, "a");
        if (!log->spikes) return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddStringToObject(o, "layer", layer);
    cJSON *rows = cJSON_AddArrayToObject(o, "spikes");
    for (int t = 0; t < T; t++) {
        cJSON *row = cJSON_CreateArray();
        for (int j = 0; j < k; j++) cJSON_AddItemToArray(row, cJSON_CreateNumber(spikes[(size_t)t * k + j]));
        cJSON_AddItemToArray(rows, row);
    }
    char *text = cJSON_PrintUnformatted(o);
    if (text) {
        fprintf(log->spikes, "%s\n", text);
        fflush(log->spikes);
    }
    cJSON_free(text);
    cJSON_Delete(o);
}

bf_status bf_metrics_check_loss(const bf_train_metrics *mt) {
    if (isfinite(mt->loss)) return BF_OK;
    const char *value = isnan(mt->loss) ? "NaN" : mt->loss > 0 ? "+inf" : "-inf"; /* not printf's "-nan" */
    return bf_error(BF_ERR_INTERNAL, "the training loss became %s at step %ld (epoch %d): lower [optim] lr or set "
                    "[optim] grad_clip_norm", value, mt->step, mt->epoch + 1);
}

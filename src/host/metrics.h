/* metrics.h - internal: metrics.jsonl (one JSON object per line, appended and flushed, read by
 * the plotting scripts in tools/) and the in-place progress line on a terminal. */
#ifndef BIOFLEX_METRICS_H
#define BIOFLEX_METRICS_H

#include <stdio.h>

#include "bioflex/ops.h"
#include "bioflex/status.h"

typedef struct bf_train_metrics {
    int epoch, epochs;          /* epoch counts from 0 here; the log and the progress line say epoch + 1 */
    long step, steps_per_epoch, step_in_epoch;
    double loss, accuracy, lr, grad_norm;
    double ms_per_step, images_per_s, data_wait_ms, tflops, eta_s;
    int num_flex;               /* flex layers: the fraction of elements where the conv won */
    const char *const *flex_names;
    const double *flex_conv_ratio;
    const double *flex_homogeneity;
    int num_neuron;             /* neuron layers: firing rate and the fraction of silent neurons */
    const char *const *neuron_names;
    const double *firing_rate, *silent;
    const long *skipped_images; /* JPEG datasets: undecodable training images skipped so far; NULL for others */
    const double *comm_exposed_ms; /* data-parallel runs: mean ms per step the gradient all-reduce held
                                    * the step (metrics.c); NULL for the plain single-process run */
    double mfu;                 /* model FLOP utilisation: tflops / the GPU's peak (0: not known, CPU) */
    const double *device_peak_gib; /* CUDA: the most device memory the backend held during the interval
                                    * (bf_cuda_memory_bytes); NULL on the CPU */
} bf_train_metrics;

/* Dense peak TFLOP/s of a GPU of compute capability major.minor with `sms` multiprocessors at
 * clock_khz, for fp32 (CUDA cores) or tf32 (tensor cores): sms x clock x FLOPs per clock per SM
 * (sm_80, 86, 89 and 90); 0 for an architecture it does not know. The maximum clock
 * (bf_cuda_device_shape) is above the one NVIDIA quotes its peaks at (H100 SXM: 1.98 against
 * 1.83 GHz), so a utilisation against it reads a little low. */
double bf_peak_tflops(int cc_major, int cc_minor, int sms, int clock_khz, bf_precision precision);

/* An error naming the step and epoch when a train line's loss is not a finite number (the run
 * cannot recover from it; the line itself is logged first), BF_OK otherwise. */
bf_status bf_metrics_check_loss(const bf_train_metrics *mt);

typedef struct bf_metrics_log {
    FILE *jsonl;     /* metrics.jsonl in the run directory */
    FILE *spikes;    /* spikes.jsonl, opened on the first raster */
    char dir[1024];
    int progress;    /* 1: redraw a progress line on stderr (a terminal) */
    int line_open;   /* a progress line is on screen and must be ended before other output */
} bf_metrics_log;

bf_status bf_metrics_open(bf_metrics_log *log, const char *run_dir, int progress);
/* {"type":"start","resumed":..,"epoch":..,"from_step":..}: where a run (resumed: true) or a fresh one
 * (false) begins to append. A fresh run in a directory that holds another's lines starts a new
 * history: tools/plot_metrics.py reads from the last fresh start on. */
void bf_metrics_start(bf_metrics_log *log, int resumed, int epoch, long step);
void bf_metrics_close(bf_metrics_log *log);
void bf_metrics_train(bf_metrics_log *log, const bf_train_metrics *m, FILE *text);
/* {"type":"eval_health","split":..,"epoch":..,"step":..,"max_abs_logit":..,"max_loss":..,
 * "nonfinite_losses":..,"flex_bn_min_running_var":{layer: value, ...}} beside an evaluation: what
 * shows a few exploding outputs behind a sane top-1 (flex_names may be NULL when num_flex is 0). A
 * warning to `text` (nullable) when a loss was not finite or a logit exceeded 1e4. */
void bf_metrics_eval_health(bf_metrics_log *log, int epoch, long step, const char *split, double max_abs_logit,
                            double max_loss, int nonfinite_losses, int samples, int num_flex,
                            const char *const *flex_names, const double *flex_bn_min_var, FILE *text);
/* {"type":"eval",...}; top5 or balanced_top1 < 0: not measured (left out of the line and the text) */
void bf_metrics_eval(bf_metrics_log *log, int epoch, long step, double loss, double top1, double top5, double balanced_top1, int samples,
                     const char *split, FILE *text);
/* Appends one raster {"step", "layer", "spikes": [[T rows of k 0/1]]} to spikes.jsonl. */
void bf_metrics_spikes(bf_metrics_log *log, long step, const char *layer, int T, int k, const float *spikes);
/* Ends the progress line (if any) so the next text starts on a fresh line. */
void bf_metrics_break_line(bf_metrics_log *log);

#endif

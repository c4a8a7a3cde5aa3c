/* train.c - the training run: datasets and loaders, the model, the optimiser, then per step
 *   copy batch -> forward -> loss -> backward -> [grad norm, clip] -> optimiser,
 * with losses and accuracies summed on the device and read back once per log interval (the only
 * host synchronisation in the loop), a full test pass every eval_every epochs and a checkpoint
 * every checkpoint_every epochs and at the end (and every checkpoint_every_steps steps inside an
 * epoch). A stop request (bf_train_options.stop) ends the run after a step with a checkpoint of
 * that position; resuming from it continues as if nothing had happened. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/butd.h"
#include "bioflex/fragments_run.h"
#include "bioflex/train.h"
#include "batch_upload.h"
#include "data_parallel.h"
#include "fsutil.h"
#include "metrics.h"

bf_status bf_backend_cuda_from_config(const bf_config *cfg, int device, bf_backend **out) {
    BF_TRY(bf_backend_create_cuda(device, (bf_precision)cfg->run.precision, out));
    bf_status s = bf_cuda_set_deterministic(*out, cfg->run.deterministic);
    if (s == BF_OK) s = bf_cuda_set_conv_workspace_limit(*out, (size_t)cfg->run.conv_workspace_mib << 20);
    if (s == BF_OK) s = bf_cuda_set_conv_workspace_reuse(*out, cfg->run.conv_workspace_reuse);
    if (s == BF_OK) s = bf_cuda_set_conv_workspace_slack(*out, cfg->run.conv_workspace_slack);
    if (s == BF_OK) s = bf_cuda_set_conv_api(*out, cfg->run.conv_api);
    if (s == BF_OK) s = bf_cuda_set_flex_kernels(*out, cfg->model.flex_kernels);
    if (s != BF_OK) {
        bf_backend_destroy(*out);
        *out = NULL;
    }
    return s;
}

bf_status bf_backend_cpu_from_config(const bf_config *cfg, bf_backend **out) {
    BF_TRY(bf_backend_create_cpu(cfg->run.threads, out));
    bf_cpu_conv_library library = (bf_cpu_conv_library)cfg->run.cpu_conv;
    if (cfg->run.cpu_conv == BF_CPU_CONV_AUTO) library = bf_cpu_have_onednn() ? BF_CPU_CONV_ONEDNN : BF_CPU_CONV_IM2COL;
    bf_status s = bf_cpu_set_conv_library(*out, library);
    if (s != BF_OK) {
        bf_backend_destroy(*out);
        *out = NULL;
    }
    return s;
}

bf_status bf_backend_from_config(const bf_config *cfg, bf_backend **out) {
    int want_cuda = cfg->run.device == BF_DEVICE_SEL_CUDA ||
                    (cfg->run.device == BF_DEVICE_AUTO && bf_cuda_device_count() > 0);
    if (want_cuda) return bf_backend_cuda_from_config(cfg, 0, out);
    return bf_backend_cpu_from_config(cfg, out);
}

#define BF_MAX_FLEX_LOG 128

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Everything a run holds; released by run_free in reverse order. */
typedef struct run {
    const bf_config *cfg;
    FILE *text;
    bf_backend *backend;
    bf_dataset *train_set, *test_set;
    bf_loader *train_loader, *test_loader;
    bf_loader *train_eval_loader; /* [run] eval_train: the training split as evaluation reads it (NULL: off) */
    bf_batch_uploader *upload; /* loader batch -> model input (uint8 batches normalised on the backend) */
    bf_model *model;
    bf_optimizer *opt;
    bf_metrics_log log;
    bf_data_parallel dp; /* rank and world of a data-parallel run (mpirun); one rank otherwise */
    const atomic_int *stop; /* bf_train_options.stop: asks the run to stop early */
    double best_top1;                  /* [run] keep_best: the best evaluation so far (-1: none) */
    long skipped_before;               /* training images skipped before a resume (bf_train_state) */
    /* device buffers of the step */
    float *x, *losses, *correct1, *correct5, *dlogits, *sums, *grad_sumsq, *clip;
    int32_t *labels;
    float *grad_sum; /* [data] micro_batches > 1: the gradients of the step's slices so far (else NULL) */
    float *raster;   /* [spiking] raster_neurons: host, each neuron layer's T x k spikes (read_rasters) */
    double flops_per_image; /* forward */
    double peak_tflops;     /* the GPU's dense peak in this precision (0: a CPU, or a GPU not in the table) */
    double flex_ratio[BF_MAX_FLEX_LOG]; /* conv ratio of each flex layer over the last log interval */
    double flex_homogeneity[BF_MAX_FLEX_LOG];
    double firing_rate[BF_MAX_FLEX_LOG], silent[BF_MAX_FLEX_LOG]; /* per neuron layer, last log interval */
    const char *neuron_names[BF_MAX_FLEX_LOG];
    int num_neuron;
    const char *flex_names[BF_MAX_FLEX_LOG];
    int num_flex;
    int stepped, monitored; /* a step, and a step that gathered the log's monitors, has run (bf_dp_set_warmup) */
    size_t *frozen;         /* [optim] train_only: the parameter ranges not trained, offset and count each */
    int num_frozen;
} run;

static void run_free(run *r) {
    bf_backend *b = r->backend;
    if (b) {
        bf_free(b, r->x);
        bf_free(b, r->labels);
        bf_free(b, r->losses);
        bf_free(b, r->dlogits);
        bf_free(b, r->sums);
        bf_free(b, r->grad_sum);
        bf_optimizer_destroy(b, r->opt);
    }
    bf_model_destroy(r->model);
    free(r->frozen);
    free(r->raster);
    bf_batch_uploader_destroy(r->upload); /* before the loaders: it waits for copies still reading their slots */
    bf_loader_destroy(r->train_loader);
    bf_loader_destroy(r->test_loader);
    bf_loader_destroy(r->train_eval_loader);
    bf_dataset_free(r->train_set);
    bf_dataset_free(r->test_set);
    bf_metrics_close(&r->log);
    if (b) bf_backend_destroy(b);
}

/* JPEG datasets load as uint8 batches into a ring in the backend's host memory (pinned on CUDA) and
 * are normalised by the backend: the same bits as the host floats (both compute (v * (1/255) -
 * mean) * (1/std) in float), 4x less to copy. Stored datasets keep the float path: their floats are
 * v / 255, which differs from v * (1/255) in the last bit for some v, and their results must not
 * change. */
static void choose_batch_format(const run *r, const bf_dataset *d, int float_batches, bf_loader_options *o) {
    if (float_batches || !d->files || !bf_loader_u8_applies(d, o)) return;
    o->u8_hwc = 1;
    o->host_alloc = bf_backend_host_allocator(r->backend);
}

static bf_status open_data(run *r, int float_batches) {
    const bf_config *cfg = r->cfg;
    BF_TRY(bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &r->train_set));
    BF_TRY(bf_run_open_dataset(cfg, BF_SPLIT_TEST, &r->test_set));
    bf_loader_options o = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
    bf_dp_loader_options(&r->dp, &o, 1);
    choose_batch_format(r, r->train_set, float_batches, &o);
    BF_TRY(bf_dp_check_data(&r->dp, r->train_set, r->test_set, r->text));
    BF_TRY(bf_loader_create(r->train_set, &o, &r->train_loader));
    o = bf_loader_options_from_config(cfg, BF_SPLIT_TEST);
    bf_dp_loader_options(&r->dp, &o, 0);
    choose_batch_format(r, r->test_set, float_batches, &o);
    BF_TRY(bf_loader_create(r->test_set, &o, &r->test_loader));
    if (cfg->run.eval_train) { /* the training images with the test split's transform: no augmentation */
        choose_batch_format(r, r->train_set, float_batches, &o);
        BF_TRY(bf_loader_create(r->train_set, &o, &r->train_eval_loader));
    }
    return bf_batch_uploader_create(r->backend, &r->upload);
}

bf_status bf_run_open_dataset(const bf_config *cfg, bf_split split, bf_dataset **out) {
    bf_status s = bf_dataset_open(&cfg->data, cfg->run.seed, split, out);
    if (s == BF_ERR_CONFIG) bf_config_locate_keys(cfg);
    return s;
}

bf_status bf_run_build_model(const bf_config *cfg, bf_backend *b, const bf_dataset *d, int for_training,
                             bf_model **out) {
    bf_model_config model = cfg->model;
    if (for_training && cfg->optim.train_only[0]) { /* the backward ends at the trained layers, in evaluation mode for a probe */
        model.trained_only = cfg->optim.train_only;
        model.eval_backward = cfg->optim.train_only_mode == 0;
    }
    int classes = cfg->model.num_classes ? cfg->model.num_classes : d->num_classes;
    /* [data] micro_batches: the network takes a slice of the step's batch at once (train_step) */
    int batch = bf_data_slice(&cfg->data), eval_batch = bf_data_eval_batch(&cfg->data);
    bf_shape in = {batch > eval_batch ? batch : eval_batch, d->c, d->h, d->w};
    bf_status s = classes < d->num_classes
                      ? bf_error(BF_ERR_CONFIG, "[model] num_classes = %d but [data] dataset = %s has %d classes",
                                 classes, d->name, d->num_classes)
                      : bf_model_build(b, &model, in, classes, cfg->run.seed, out);
    /* The model's keys and the data's shape are the only inputs here, so a layer that does not fit
     * (VGG-16's five pools on 28x28 digits) is a config error, named by its keys (exit status 2). */
    if (s == BF_ERR_ARG) {
        const char *source = cfg->source[0] ? cfg->source : "the configuration";
        s = bf_error_context(BF_ERR_CONFIG, "%s: [model] arch = %s does not fit the %dx%dx%d images of [data] dataset "
                             "= %s (%s, or larger images)", source, bf_arch_name(cfg->model.arch), d->c, d->h, d->w,
                             d->name, cfg->model.arch == BF_ARCH_CNN ? "fewer [model] channels (each adds a pool)"
                                                                     : "a smaller arch");
    }
    if (s == BF_ERR_CONFIG) bf_config_locate_keys(cfg); /* a relation of the [model] keys, or with the data */
    if (s == BF_ERR_OOM && b && b->kind == BF_DEVICE_CUDA) { /* the plan does not fit: how large, and the ways out */
        bf_model *plan = NULL;
        const double mib = bf_model_build(NULL, &model, in, classes, cfg->run.seed, &plan) == BF_OK
                               ? plan->arena_bytes / 1048576.0 : 0;
        bf_model_destroy(plan);
        s = bf_error_context(s, "the network at %d images a pass plans %.1f %s of activations, gradients and scratch "
                             "(bioflex-train --dry-run lists it), more than the GPU could give: lower [data] batch_size, "
                             "or keep the batch and take it in slices, [data] micro_batches = K (about 1/K of that "
                             "memory, the same update), or spread it over GPUs (--gpus)", in.n,
                             mib >= 1024 ? mib / 1024 : mib, mib >= 1024 ? "GiB" : "MiB");
    }
    return s;
}

static bf_status alloc_step_buffers(run *r) {
    bf_backend *b = r->backend;
    /* the step's whole batch is uploaded at once, and with micro_batches the network takes it in slices */
    int n = r->model->input_shape.n > r->cfg->data.batch_size ? r->model->input_shape.n : r->cfg->data.batch_size;
    int k = r->model->num_classes;
    bf_shape batch_shape = r->model->input_shape;
    batch_shape.n = n;
    BF_TRY(bf_alloc(b, bf_shape_count(batch_shape) * sizeof(float), (void **)&r->x));
    if (r->cfg->data.micro_batches > 1)
        BF_TRY(bf_alloc(b, r->model->num_param_floats * sizeof(float), (void **)&r->grad_sum));
    BF_TRY(bf_alloc(b, (size_t)n * sizeof(int32_t), (void **)&r->labels));
    BF_TRY(bf_alloc(b, (size_t)n * 3 * sizeof(float), (void **)&r->losses));
    r->correct1 = r->losses + n;
    r->correct5 = r->losses + 2 * n;
    BF_TRY(bf_alloc(b, (size_t)n * k * sizeof(float), (void **)&r->dlogits));
    BF_TRY(bf_alloc(b, 8 * sizeof(float), (void **)&r->sums)); /* loss, correct1, correct5, -, sumsq, clip */
    r->grad_sumsq = r->sums + 4;
    r->clip = r->sums + 5;
    for (int i = 0; i < r->model->num_layers; i++) r->flops_per_image += bf_layer_flops(r->model, i);
    int major, minor, sms, clock_khz;
    if (b->kind == BF_DEVICE_CUDA && bf_cuda_device_shape(b, &major, &minor, &sms, &clock_khz) == BF_OK)
        r->peak_tflops = bf_peak_tflops(major, minor, sms, clock_khz, b->precision);
    return BF_OK;
}

/* The forward and backward of images [from, from + count) of the step's n uploaded ones: the loss's
 * scale 1/n makes the slices' summed gradients those of the batch's mean loss. With several slices
 * ([data] micro_batches) their gradients are summed in r->grad_sum, and the last slice's get the
 * sum of the others added; dropout draws by each image's place in the batch (sample_offset), so a
 * slice draws what the whole batch would. */
static bf_status slice_step(run *r, int from, int count, int n, int slice, int slices) {
    bf_backend *b = r->backend;
    const bf_ops *ops = b->ops;
    const bf_config *cfg = r->cfg;
    bf_model *m = r->model;
    const int k = m->num_classes;
    BF_TRY(bf_model_set_batch(m, count));
    /* its samples' place in the global batch */
    m->sample_offset = (uint64_t)r->dp.rank * (uint64_t)cfg->data.batch_size + (uint64_t)from;
    const float *logits = NULL;
    BF_TRY(bf_model_forward(m, r->x + (size_t)from * bf_shape_per_sample(m->input_shape), &logits));
    const int32_t *labels = r->labels + from;
    BF_TRY(ops->softmax_xent(b, count, k, logits, labels, cfg->optim.label_smoothing, 1.0f / n, r->losses, r->dlogits));
    BF_TRY(ops->topk_correct(b, count, k, logits, labels, r->correct1, r->correct5));
    BF_TRY(ops->accumulate_sum(b, r->losses, (size_t)count, r->sums + 0));
    BF_TRY(ops->accumulate_sum(b, r->correct1, (size_t)count, r->sums + 1));
    BF_TRY(bf_model_backward(m, r->dlogits));
    if (slices == 1) return BF_OK;
    const size_t floats = m->num_param_floats;
    if (slice == 0) return ops->copy(b, r->grad_sum, m->grad_data, floats * sizeof(float));
    return slice < slices - 1 ? ops->add_inplace(b, r->grad_sum, m->grad_data, floats)
                              : ops->add_inplace(b, m->grad_data, r->grad_sum, floats);
}

/* [spiking] raster_neurons: how many of neuron layer l's first neurons a raster holds */
static int raster_width(const run *r, const bf_layer *l) {
    int k = r->cfg->model.spiking.raster_neurons, per_sample = (int)bf_shape_per_sample(l->out_shape);
    return k < per_sample ? k : per_sample;
}

/* [spiking] raster_neurons: the spikes of the first neurons of every neuron layer for the batch's
 * first image, into r->raster. Read right after the step's first slice: with [data] micro_batches
 * the layers hold the last slice's outputs once the step ends, and the batch's first images (those
 * an unsliced step records) are in slice 0. A host read: called at log intervals only. */
static bf_status read_rasters(run *r) {
    if (r->cfg->model.spiking.raster_neurons <= 0) return BF_OK;
    bf_model *m = r->model;
    if (!r->raster) {
        size_t floats = 0;
        for (int i = 0; i < m->num_layers; i++)
            if (m->layers[i].kind == BF_LAYER_NEURON)
                floats += (size_t)m->layers[i].neuron.T * raster_width(r, &m->layers[i]);
        if (floats == 0) return BF_OK; /* no neuron layer: nothing to record */
        r->raster = malloc(floats * sizeof(float));
        if (!r->raster) return bf_error(BF_ERR_OOM, "spike raster: out of host memory");
    }
    float *out = r->raster;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_NEURON) continue;
        BF_TRY(bf_model_spike_raster(m, i, raster_width(r, l), out));
        out += (size_t)l->neuron.T * raster_width(r, l);
    }
    return BF_OK;
}

/* One optimisation step on one batch (no host synchronisation, but with NCCL a wait for the previous
 * step's all-reduce; with [spiking] raster_neurons, a read of the rasters on a log interval's step). */
static bf_status train_step(run *r, const bf_batch *batch, long step, float lr, int want_norm) {
    bf_backend *b = r->backend;
    const bf_ops *ops = b->ops;
    const bf_config *cfg = r->cfg;
    bf_model *m = r->model;
    int n = batch->n;
    /* NCCL: the previous step's gradient all-reduce, waited for with [run] collective_timeout (a dead
     * or stuck peer aborts the communicator with an error naming it). The host waits of this step (the
     * batch upload's ring slot, a pageable copy) queue behind that all-reduce and have no timeout of
     * their own. The GPU stays busy meanwhile with the previous step's optimiser update. */
    BF_TRY(bf_dp_check_peers(&r->dp));
    BF_TRY(bf_batch_upload(r->upload, r->train_loader, batch, r->x));
    BF_TRY(bf_to_device(b, r->labels, batch->labels, (size_t)n * sizeof(int32_t)));
    /* [optim] train_only_mode = eval: the network as evaluation runs it, the trained parameters' gradients through it */
    m->training = !m->eval_backward;
    m->eval_parameter_gradients = m->eval_backward;
    m->step = (uint64_t)step;
    m->flex_monitor_due = want_norm; /* the steps that end a log interval */
    /* [data] micro_batches: slices of the model's training batch (the last epoch's last batch may
     * hold fewer); the NCCL buckets wait for the summed gradients: no all-reduce during a backward */
    const int slice = bf_data_slice(&cfg->data), slices = (n + slice - 1) / slice;
    bf_status (*on_layer_backward)(void *, bf_model *, int) = m->on_layer_backward;
    if (slices > 1) m->on_layer_backward = NULL;
    bf_status s = BF_OK;
    for (int i = 0; i < slices && s == BF_OK; i++) {
        s = slice_step(r, i * slice, i < slices - 1 ? slice : n - i * slice, n, i, slices);
        if (s == BF_OK && i == 0 && want_norm) s = read_rasters(r); /* before the next slice's forward */
    }
    m->on_layer_backward = on_layer_backward;
    BF_TRY(s);
    BF_TRY(bf_dp_average_gradients(&r->dp, m));
    for (int k = 0; k < r->num_frozen; k++) /* [optim] train_only: out of the norm (and the update) */
        BF_TRY(ops->fill(b, m->grad_data + r->frozen[2 * k], 0.0f, r->frozen[2 * k + 1]));
    const float *scale = NULL;
    if (cfg->optim.grad_clip_norm > 0 || want_norm) BF_TRY(ops->sum_squares(b, m->grad_data, m->num_param_floats, r->grad_sumsq));
    if (cfg->optim.grad_clip_norm > 0) {
        BF_TRY(ops->clip_scale(b, r->grad_sumsq, cfg->optim.grad_clip_norm, r->clip));
        scale = r->clip;
    }
    return bf_optimizer_step(b, r->opt, m->param_data, m->grad_data, lr, scale);
}

/* [spiking] raster_neurons: the rasters read_rasters read in the log interval's last step, to
 * spikes.jsonl. */
static void write_rasters(run *r, long step) {
    if (!r->raster) return;
    const bf_model *m = r->model;
    const float *spikes = r->raster;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind != BF_LAYER_NEURON) continue;
        bf_metrics_spikes(&r->log, step, l->name, l->neuron.T, raster_width(r, l), spikes);
        spikes += (size_t)l->neuron.T * raster_width(r, l);
    }
}

/* For each flex layer (up to BF_MAX_FLEX_LOG) whose output a batch-norm normalises, that batch-norm's
 * smallest running variance: a max-routed, near-constant channel collapses it, and evaluation then
 * divides by almost nothing (FlexNet spec 9 Q6, its MaxPrefResNet's docstring). */
static bf_status flex_bn_min_running_var(const bf_model *m, const char **names, double *min_var, int *count) {
    *count = 0;
    for (int i = 0; i < m->num_layers && *count < BF_MAX_FLEX_LOG; i++) {
        if (m->layers[i].kind != BF_LAYER_FLEX) continue;
        for (int j = i + 1; j < m->num_layers; j++) {
            const bf_layer *bn = &m->layers[j];
            if (bn->kind != BF_LAYER_BATCHNORM || bn->input[0] != i || bn->buffer_index[1] < 0) continue;
            const bf_param *var = &m->buffers[bn->buffer_index[1]];
            float *host = malloc(var->count * sizeof *host);
            if (!host) return bf_error(BF_ERR_OOM, "evaluation: out of host memory");
            bf_status s = bf_to_host(m->backend, host, m->buffer_data + var->offset, var->count * sizeof *host);
            double lowest = INFINITY;
            for (size_t c = 0; s == BF_OK && c < var->count; c++) lowest = fmin(lowest, host[c]);
            free(host);
            BF_TRY(s);
            names[*count] = m->layers[i].name, min_var[(*count)++] = lowest;
            break;
        }
    }
    return BF_OK;
}

/* One split scored in evaluation mode over every rank's shard (max_batches: 0 the whole split) and
 * logged as `split`. The epoch keys the input noise ([data] input_noise_std), drawn anew for every
 * evaluation as the reference's loader does, and bioflex-eval takes it from the checkpoint. */
static bf_status score_split(run *r, bf_loader *loader, const bf_train_state *st, int max_batches, const char *split,
                             bf_eval_result *res) {
    const int classes = r->model->num_classes;
    double *class_counts = malloc(2 * (size_t)classes * sizeof *class_counts);
    if (!class_counts) return bf_error(BF_ERR_OOM, "evaluation: out of host memory");
    bf_status s = bf_evaluate_batches_by_class(r->model, loader, r->cfg->optim.label_smoothing, st->epoch, max_batches,
                                               class_counts, res);
    if (s == BF_OK) s = bf_dp_reduce_eval(&r->dp, res, class_counts, classes);
    free(class_counts);
    BF_TRY(s);
    bf_metrics_eval(&r->log, st->epoch, st->step, res->loss, res->top1, res->top5, res->balanced_top1, res->samples,
                    split, r->text);
    double min_var[BF_MAX_FLEX_LOG];
    const char *names[BF_MAX_FLEX_LOG];
    int num_flex = 0;
    BF_TRY(flex_bn_min_running_var(r->model, names, min_var, &num_flex));
    bf_metrics_eval_health(&r->log, st->epoch, st->step, split, res->max_abs_logit, res->max_loss, res->nonfinite_losses,
                           res->samples, num_flex, names, min_var, r->text);
    return BF_OK;
}

/* The training images skipped as undecodable since the run began (file datasets; else 0): every
 * rank's loader count, and what the run had skipped before a resume. A collective with ranks. */
static bf_status skipped_so_far(run *r, long *count) {
    *count = 0;
    if (!r->train_set->files) return BF_OK;
    double n = (double)bf_loader_skipped_images(r->train_loader);
    if (r->dp.world > 1) BF_TRY(bf_comm_allreduce_double(r->dp.comm, &n, 1));
    *count = (long)n + r->skipped_before;
    return BF_OK;
}

/* final: the whole test set; otherwise [run] val_batches random batches when set; with [run]
 * eval_train the training split the same way, after it. With [run] keep_best, a better test top-1
 * than any before replaces checkpoints/best (st: the position there). */
static bf_status evaluate_and_log(run *r, const bf_train_state *st, int final, bf_eval_result *res) {
    int batches = final ? 0 : r->cfg->run.val_batches;
    /* Every rank scores its shard with rank 0's running statistics, the ones its checkpoint holds
     * (PyTorch DDP's broadcast_buffers), so the logged score is bioflex-eval's of that checkpoint. */
    if (r->dp.world > 1) BF_TRY(bf_dp_broadcast_floats(&r->dp, r->backend, r->model->buffer_data, r->model->num_buffer_floats));
    BF_TRY(score_split(r, r->test_loader, st, batches, batches ? "test_batches" : "test", res));
    if (r->train_eval_loader) {
        bf_eval_result train;
        BF_TRY(score_split(r, r->train_eval_loader, st, batches, batches ? "train_batches" : "train", &train));
    }
    if (!r->cfg->run.keep_best || res->top1 <= r->best_top1) return BF_OK;
    r->best_top1 = res->top1; /* the same on every rank: the counts were reduced */
    bf_train_state best = *st;
    best.eval_top1 = res->top1;
    BF_TRY(skipped_so_far(r, &best.skipped_images));
    char written[BF_PATH_MAX] = "";
    if (bf_dp_writes_checkpoints(&r->dp)) BF_TRY(bf_checkpoint_save_best(r->cfg, r->model, r->opt, &best, written));
    BF_TRY(bf_dp_checkpoint_written(&r->dp));
    fprintf(r->text, "best top-1 so far (%.2f%%): %s\n", 100 * res->top1, written);
    return BF_OK;
}

/* A checkpoint of st's position, written by rank 0 while the other ranks wait for it. */
static bf_status save_checkpoint(run *r, const bf_train_state *st, bf_train_result *result) {
    BF_TRY(bf_dp_check_peers(&r->dp)); /* the copy to the host would wait untimed for the all-reduce */
    bf_train_state at = *st;
    BF_TRY(skipped_so_far(r, &at.skipped_images));
    if (bf_dp_writes_checkpoints(&r->dp)) BF_TRY(bf_checkpoint_save(r->cfg, r->model, r->opt, &at, result->checkpoint));
    BF_TRY(bf_dp_checkpoint_written(&r->dp));
    bf_metrics_break_line(&r->log);
    fprintf(r->text, "checkpoint: %s\n", result->checkpoint);
    return BF_OK;
}

/* save_checkpoint inside an epoch, with the loss and correct answers the interval has summed over
 * `images` images (every rank's) but not yet logged: a resume adds them to its first train line. */
static bf_status save_checkpoint_pending(run *r, const bf_train_state *st, long images, bf_train_result *result) {
    bf_train_state at = *st;
    if (images > 0) {
        double sums[2];
        BF_TRY(bf_dp_pending_sums(&r->dp, r->backend, r->sums, 2, sums));
        at.interval_loss = sums[0], at.interval_correct = sums[1], at.interval_images = images;
    }
    return save_checkpoint(r, &at, result);
}

/* With several ranks, the flex and spike monitors of every rank's share of the batch, averaged:
 * the shares are equal (data_parallel.c drops an incomplete last global batch), so the mean is
 * the whole batch's fraction. *skipped (JPEG datasets; NULL otherwise), the images each rank's
 * loader skipped in its shard, is summed. Every rank takes part, at the same log step. */
static bf_status combine_monitors(run *r, int num_flex, int num_neuron, long *skipped) {
    if (r->dp.world == 1 || (num_flex + num_neuron == 0 && !skipped)) return BF_OK;
    double v[4 * BF_MAX_FLEX_LOG + 1];
    const int nf = num_flex, nn = num_neuron;
    for (int i = 0; i < nf; i++) v[i] = r->flex_ratio[i], v[nf + i] = r->flex_homogeneity[i];
    for (int i = 0; i < nn; i++) v[2 * nf + i] = r->firing_rate[i], v[2 * nf + nn + i] = r->silent[i];
    size_t n = (size_t)(2 * nf + 2 * nn);
    if (skipped) v[n++] = (double)*skipped;
    BF_TRY(bf_comm_allreduce_double(r->dp.comm, v, n));
    if (skipped) *skipped = (long)v[n - 1];
    for (int i = 0; i < nf; i++) r->flex_ratio[i] = v[i] / r->dp.world, r->flex_homogeneity[i] = v[nf + i] / r->dp.world;
    for (int i = 0; i < nn; i++)
        r->firing_rate[i] = v[2 * nf + i] / r->dp.world, r->silent[i] = v[2 * nf + nn + i] / r->dp.world;
    return BF_OK;
}

static bf_status train_loop(run *r, bf_train_state *st, bf_train_result *result) {
    const bf_config *cfg = r->cfg;
    bf_backend *b = r->backend;
    int steps_per_epoch = bf_loader_num_batches(r->train_loader), epochs = cfg->run.epochs;
    int last_eval_epoch = -1, last_ckpt_epoch = -1;
    double run_start = now_s();
    long first_step = st->step;
    /* A resume inside a log interval: what the stopped run summed and did not log yet counts in the
     * first train line (rank 0's sums start from it). */
    long carried_images = st->interval_images;
    const double carried[2] = {st->interval_loss, st->interval_correct};
    st->interval_images = 0, st->interval_loss = st->interval_correct = 0;
    for (int epoch = st->epoch; epoch < epochs; epoch++) {
        int first_batch = st->batch_in_epoch; /* > 0 when resuming from a checkpoint inside this epoch */
        BF_TRY(bf_loader_start_epoch(r->train_loader, epoch, first_batch));
        BF_TRY(b->ops->fill(b, r->sums, 0.0f, 4));
        if (carried_images > 0) BF_TRY(bf_dp_restore_sums(&r->dp, b, r->sums, carried, 2));
        double interval_start = now_s(), wait_ms = 0;
        int interval_images = 0, interval_steps = 0;
        for (int i = first_batch;; i++) {
            bf_batch *batch = NULL;
            double waited = 0;
            BF_TRY(bf_loader_next(r->train_loader, &batch, &waited));
            if (!batch) break;
            wait_ms += waited;
            int log_now = (st->step + 1) % cfg->run.log_interval == 0 || i == steps_per_epoch - 1;
            float lr = bf_schedule_lr(&cfg->optim, &cfg->schedule, epoch - st->schedule_epoch,
                                      (long)i - st->schedule_batch, steps_per_epoch, epochs);
            /* the first step, and the first that gathers the monitors, load kernels and allocate */
            bf_dp_set_warmup(&r->dp, !r->stepped || (log_now && !r->monitored));
            bf_status s = train_step(r, batch, st->step, lr, log_now);
            bf_dp_set_warmup(&r->dp, 0);
            r->stepped = 1;
            r->monitored |= log_now;
            interval_images += batch->n;
            bf_status released = bf_batch_upload_release(r->upload, r->train_loader, batch);
            BF_TRY(s);
            BF_TRY(released);
            st->step++;
            st->batch_in_epoch = i + 1;
            interval_steps++;
            if (log_now) {
                float sums[6];
                BF_TRY(bf_dp_sum_floats(&r->dp, b, r->sums, 2)); /* loss and top-1 of all ranks */
                BF_TRY(bf_to_host(b, sums, r->sums, sizeof sums)); /* the one synchronisation per interval */
                interval_images *= r->dp.world;
                const long averaged = interval_images + carried_images; /* the sums' images */
                carried_images = 0;
                double t = now_s(), dt = t - interval_start;
                bf_train_metrics mt = {
                    .epoch = epoch, .epochs = epochs, .step = st->step, .steps_per_epoch = steps_per_epoch,
                    .step_in_epoch = i + 1, .loss = sums[0] / averaged, .accuracy = sums[1] / averaged,
                    .lr = lr, .grad_norm = sqrt(sums[4]), .ms_per_step = 1e3 * dt / interval_steps,
                    .images_per_s = interval_images / dt, .data_wait_ms = wait_ms / interval_steps,
                    .tflops = 3 * r->flops_per_image * interval_images / dt / 1e12};
                /* over every rank's GPU: the images above are the global batch's */
                if (r->peak_tflops > 0) mt.mfu = mt.tflops / (r->peak_tflops * r->dp.world);
                mt.num_flex = bf_model_flex_monitor(r->model, r->flex_ratio, r->flex_homogeneity, r->flex_names, BF_MAX_FLEX_LOG);
                mt.flex_names = r->flex_names;
                mt.flex_conv_ratio = r->flex_ratio;
                mt.flex_homogeneity = r->flex_homogeneity;
                mt.num_neuron = bf_model_spike_monitor(r->model, r->firing_rate, r->silent, r->neuron_names, BF_MAX_FLEX_LOG);
                mt.neuron_names = r->neuron_names;
                mt.firing_rate = r->firing_rate;
                mt.silent = r->silent;
                long skipped = bf_loader_skipped_images(r->train_loader);
                if (r->train_set->files) mt.skipped_images = &skipped;
                BF_TRY(combine_monitors(r, mt.num_flex, mt.num_neuron, r->train_set->files ? &skipped : NULL));
                skipped += r->skipped_before; /* counted since the run began, a resume included */
                double comm_ms = 0; /* read after the synchronisation above: its events are complete */
                BF_TRY(bf_dp_interval_comm_ms(&r->dp, &comm_ms));
                if (bf_dp_active(&r->dp)) mt.comm_exposed_ms = &comm_ms;
                size_t peak_bytes = 0; /* this interval's peak: the count restarts from what is held now */
                bf_cuda_memory_bytes(b, 1, NULL, &peak_bytes);
                const double peak_gib = (double)peak_bytes / (1024.0 * 1024.0 * 1024.0);
                if (b->kind == BF_DEVICE_CUDA) mt.device_peak_gib = &peak_gib;
                /* in this run's steps: a resumed run may have another global batch */
                long remaining = (long)(epochs - epoch) * steps_per_epoch - (i + 1);
                mt.eta_s = remaining * (t - run_start) / (double)(st->step - first_step);
                /* Once a stop is requested, no progress line: a launcher that is shutting down may
                 * stop reading our output, and a blocked write would keep the run from its
                 * checkpoint. The checkpoint is written before anything else is printed. */
                int stopping = r->stop && *r->stop;
                if (stopping) r->log.progress = 0;
                bf_metrics_train(&r->log, &mt, stopping ? NULL : r->text);
                write_rasters(r, st->step);
                r->num_flex = mt.num_flex;
                r->num_neuron = mt.num_neuron;
                BF_TRY(bf_metrics_check_loss(&mt));
                BF_TRY(b->ops->fill(b, r->sums, 0.0f, 4));
                interval_start = now_s();
                interval_images = interval_steps = 0;
                wait_ms = 0;
            }
            /* A stop request (a signal) or a checkpoint inside the epoch. */
            int stop = 0;
            if (r->dp.world > 1 ? log_now : r->stop != NULL)
                BF_TRY(bf_dp_agree_stop(&r->dp, r->stop && *r->stop, &stop));
            int last_in_epoch = i == steps_per_epoch - 1, every = cfg->run.checkpoint_every_steps;
            /* the images summed since the last train line, every rank's */
            const long pending = (long)interval_images * r->dp.world + carried_images;
            if (stop && !(last_in_epoch && epoch == epochs - 1)) { /* the run's last step just finishes it */
                BF_TRY(save_checkpoint_pending(r, st, pending, result));
                fprintf(r->text, "stopped on request after step %ld (epoch %d, batch %d of %d); continue with "
                        "--resume %s\n", st->step, epoch + 1, i + 1, steps_per_epoch, cfg->run.dir);
                result->interrupted = 1;
                result->epochs_done = st->epoch;
                result->steps_done = st->step;
                return BF_OK;
            }
            /* at an epoch's end only when no epoch checkpoint follows */
            if (every > 0 && st->step % every == 0 && !(last_in_epoch && bf_epoch_checkpoint_due(cfg, epoch + 1)))
                BF_TRY(save_checkpoint_pending(r, st, pending, result));
        }
        st->epoch = epoch + 1;
        st->batch_in_epoch = 0;
        int last = st->epoch == epochs;
        if (last || (cfg->run.eval_every > 0 && st->epoch % cfg->run.eval_every == 0)) {
            BF_TRY(evaluate_and_log(r, st, last, &result->final_eval));
            last_eval_epoch = st->epoch;
        }
        if (bf_epoch_checkpoint_due(cfg, st->epoch)) {
            BF_TRY(save_checkpoint(r, st, result));
            last_ckpt_epoch = st->epoch;
        }
    }
    /* A resumed run that was already complete still reports its test accuracy. */
    if (last_eval_epoch != st->epoch) BF_TRY(evaluate_and_log(r, st, 1, &result->final_eval));
    (void)last_ckpt_epoch;
    if (r->num_neuron > 0) {
        fprintf(r->text, "neuron layers (last log interval): %-24s %12s %10s\n", "layer", "firing rate", "silent");
        for (int i = 0; i < r->num_neuron; i++)
            fprintf(r->text, "%34s %-24s %12.4f %10.4f\n", "", r->neuron_names[i], r->firing_rate[i], r->silent[i]);
    }
    if (r->num_flex > 0) {
        fprintf(r->text, "flex layers (last log interval):  %-24s %10s %12s\n", "layer", "conv ratio", "homogeneity");
        for (int i = 0; i < r->num_flex; i++)
            fprintf(r->text, "%34s%-24s %10.4f %12.4f\n", "", r->flex_names[i], r->flex_ratio[i], r->flex_homogeneity[i]);
    }
    result->epochs_done = st->epoch;
    result->steps_done = st->step;
    return BF_OK;
}

/* [optim] train_only: the ranges of the parameter buffer that train go to the optimiser, the others to
 * r->frozen, whose gradients each step zeroes. Parameters are laid out in registration order, so a
 * run of neighbours with the same fate is one range. */
static bf_status restrict_training(run *r) {
    const char *prefixes = r->cfg->optim.train_only;
    const bf_model *m = r->model;
    if (!prefixes[0]) return BF_OK;
    size_t *ranges[2] = {calloc(2 * (size_t)m->num_params, sizeof(size_t)), calloc(2 * (size_t)m->num_params, sizeof(size_t))};
    int count[2] = {0, 0}, tensors = 0; /* [0] trained, [1] frozen */
    size_t floats = 0;
    if (!ranges[0] || !ranges[1]) {
        free(ranges[0]), free(ranges[1]);
        return bf_error(BF_ERR_OOM, "[optim] train_only: out of host memory");
    }
    for (int i = 0; i < m->num_params; i++) {
        const bf_param *p = &m->params[i];
        int side = !bf_name_in_prefixes(p->name, prefixes);
        size_t *last = count[side] ? ranges[side] + 2 * (count[side] - 1) : NULL;
        if (last && last[0] + last[1] == p->offset) last[1] += p->count;
        else ranges[side][2 * count[side]] = p->offset, ranges[side][2 * count[side] + 1] = p->count, count[side]++;
        if (!side) tensors++, floats += p->count;
    }
    bf_status s = BF_OK;
    if (!tensors)
        s = bf_error(BF_ERR_CONFIG, "[optim] train_only = %s matches no parameter of %s (its names run from %s to %s)",
                     prefixes, m->arch, m->params[0].name, m->params[m->num_params - 1].name);
    if (s == BF_OK) s = bf_optimizer_restrict(r->opt, ranges[0], count[0]);
    free(ranges[0]);
    r->frozen = ranges[1], r->num_frozen = count[1];
    if (s == BF_OK)
        fprintf(r->text, "[optim] train_only = %s: %d of %d parameter tensors train (%zu of %zu floats)\n", prefixes,
                tensors, m->num_params, floats, m->num_param_floats);
    return s;
}

static bf_status train_run(run *r, const bf_train_options *opt, bf_train_result *result) {
    const bf_config *cfg = r->cfg;
    r->stop = opt ? opt->stop : NULL;
    BF_TRY(bf_dp_create_backend(&r->dp, cfg, &r->backend));
    BF_TRY(open_data(r, opt && opt->float_batches));
    BF_TRY(bf_run_build_model(cfg, r->backend, r->train_set, 1, &r->model));
    BF_TRY(bf_optimizer_create(r->backend, &cfg->optim, r->model->num_param_floats, &r->opt));
    BF_TRY(restrict_training(r));
    BF_TRY(alloc_step_buffers(r));
    bf_train_state st = {.epoch = 0, .step = 0, .seed = cfg->run.seed, .eval_top1 = -1};
    if (cfg->model.init_weights[0] && !(opt && opt->resume)) {
        BF_TRY(bf_checkpoint_init_weights(cfg->model.init_weights, cfg->model.init_exclude, r->model));
        fprintf(r->text, "initial weights from %s%s%s\n", cfg->model.init_weights,
                cfg->model.init_exclude[0] ? ", except " : "", cfg->model.init_exclude);
    }
    /* keep_best: a resumed run goes on from the best its directory holds, refused when that is no
     * top-1 (it would be beaten never or always); a fresh one starts over */
    r->best_top1 = -1;
    if (opt && opt->resume && cfg->run.keep_best) BF_TRY(bf_checkpoint_read_best_top1(cfg->run.dir, &r->best_top1));
    BF_TRY(bf_comm_broadcast(r->dp.comm, &r->best_top1, sizeof r->best_top1, 0)); /* rank 0's files decide */
    int batches = bf_loader_num_batches(r->train_loader);
    char data_now[sizeof st.data];
    bf_resume_describe_data(r->train_set->name, r->train_set->num_samples, cfg->data.batch_size * r->dp.world,
                            &cfg->data, data_now, sizeof data_now);
    if (opt && opt->resume) {
        char dir[BF_PATH_MAX];
        BF_TRY(bf_checkpoint_resolve(opt->resume, dir));
        BF_TRY(bf_checkpoint_load_model(dir, r->model));
        BF_TRY(bf_checkpoint_load_state(dir, cfg, r->model, r->opt, &st));
        r->skipped_before = st.skipped_images;
        BF_TRY(bf_resume_check(r->text, dir, &st, data_now, batches, cfg));
        if (cfg->run.resume_optimizer == BF_RESUME_SCHEDULE_RESTART) { /* the V1 reference's resume: weights alone */
            BF_TRY(r->backend->ops->fill(r->backend, r->opt->state, 0.0f, bf_optimizer_state_floats(r->opt)));
            r->opt->steps = 0;
            fprintf(r->text, "note: [run] resume_optimizer = restart: the optimiser's state starts empty here\n");
        }
    }
    snprintf(st.data, sizeof st.data, "%s", data_now); /* what this run's checkpoints store */
    st.batches_per_epoch = batches;
    BF_TRY(bf_dp_agree_start(&r->dp, &st, opt && opt->resume, r->backend, r->opt));
    if (opt && opt->started && r->dp.rank == 0) opt->started(opt->started_user);
    BF_TRY(bf_dp_attach_model(&r->dp, r->model));
    BF_TRY(bf_dp_metrics_open(&r->dp, &r->log, cfg->run.dir, !(opt && opt->quiet) && isatty(fileno(stderr))));
    bf_metrics_start(&r->log, opt && opt->resume, st.epoch, st.step);
    const int cuda = r->backend->kind == BF_DEVICE_CUDA;
    char cpu_detail[64]; /* the threads, and what runs the convolutions ([run] cpu_conv = auto decides) */
    snprintf(cpu_detail, sizeof cpu_detail, "%d threads, convolutions: %s", r->backend->num_threads,
             bf_cpu_conv_library_of(r->backend) == BF_CPU_CONV_ONEDNN ? "oneDNN" : "im2col + OpenBLAS");
    fprintf(r->text, "%s backend (%s), %s: %d train / %d test images, %s with %zu parameters, %d steps per epoch\n",
            cuda ? "CUDA" : "CPU", cuda ? bf_precision_name((bf_precision)cfg->run.precision) : cpu_detail,
            r->train_set->name, r->train_set->num_samples, r->test_set->num_samples, r->model->arch,
            r->model->num_param_floats, bf_loader_num_batches(r->train_loader));
    bf_schedule_warn_length(r->text, cfg, bf_loader_num_batches(r->train_loader));
    return train_loop(r, &st, result);
}

/* A fresh run in a directory that already holds one mixes two runs' metrics and checkpoints; most
 * often the researcher meant --resume, so say so (the run goes on: re-running a config is legal). */
static void warn_if_run_exists(const char *dir, FILE *text) {
    char path[BF_PATH_MAX + 32], name[64] = "";
    snprintf(path, sizeof path, "%s/checkpoints/latest", dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (!fgets(name, sizeof name, f)) name[0] = 0;
    fclose(f);
    name[strcspn(name, "\r\n")] = 0;
    fprintf(text, "warning: %s already holds a run (checkpoints/latest: %s); this fresh run appends to its "
            "metrics.jsonl and replaces its checkpoints as it writes its own (to continue it instead: --resume %s)\n",
            dir, name, dir);
}

int bf_train_uses_nccl(const bf_config *cfg, int launcher_world, int visible_gpus, int nccl_built) {
    /* force_nccl: one GPU through the data-parallel path, to measure what it costs over the plain one. */
    if (cfg->run.gpus > 1 || cfg->run.force_nccl) return 1;
    /* mpirun/srun with one process per GPU: NCCL moves the gradients device to device, in buckets
     * that overlap the backward, where the MPI path would copy them all through the host after it. */
    int cuda = cfg->run.device == BF_DEVICE_SEL_CUDA || (cfg->run.device == BF_DEVICE_AUTO && visible_gpus > 0);
    return launcher_world > 1 && cuda && nccl_built;
}

bf_status bf_train(const bf_config *cfg, const bf_train_options *opt, bf_train_result *result) {
    if (cfg->fragments.network != 0) return bf_fragments_train(cfg, opt, result); /* one process, the CPU */
    if (bf_train_uses_nccl(cfg, bf_comm_launcher_world(), bf_cuda_device_count(), bf_comm_nccl_built()))
        return bf_train_gpus(cfg, opt, cfg->run.gpus, result);
    return bf_train_rank(cfg, opt, NULL, result);
}

bf_status bf_train_rank(const bf_config *cfg, const bf_train_options *opt, bf_comm *comm, bf_train_result *result) {
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.text = opt && opt->log ? opt->log : stdout;
    memset(result, 0, sizeof *result);
    bf_status s = bf_dp_start(&r.dp, cfg, comm, &r.cfg);
    if (s == BF_OK) {
        r.text = bf_dp_text(&r.dp, r.text);
        if (!(opt && opt->resume)) warn_if_run_exists(cfg->run.dir, r.text);
        if (r.cfg->butd.network != 0) /* BU-TD networks: butd_train.c */
            s = bf_butd_train_rank(r.cfg, opt, &r.dp, r.text, result);
        else
            s = train_run(&r, opt, result);
    }
    run_free(&r);
    bf_dp_stop(&r.dp, s != BF_OK);
    return s;
}

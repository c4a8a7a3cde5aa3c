/* checkpoint.c - model and training state to and from safetensors files (see checkpoint.h). */
#include "bioflex/checkpoint.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bioflex/safetensors.h"
#include "fsutil.h"

/* ---- the tensor list of a model, in state_dict order ---- */

static void describe(bf_st_tensor *t, const bf_param *p, const float *host_base) {
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", p->name);
    t->dtype = BF_DTYPE_F32;
    t->ndim = p->ndim;
    for (int i = 0; i < p->ndim; i++) t->shape[i] = p->shape[i];
    t->data = host_base ? host_base + p->offset : NULL;
    t->nbytes = p->count * sizeof(float);
}

/* Fills tensors[] (capacity num_params + 4*num_layers) in state_dict order: per layer its
 * parameters, its buffers, and num_batches_tracked where it has a batch-norm. Returns the count. */
static int model_tensors(const bf_model *m, const float *host_params, const float *host_buffers,
                         const int64_t *batches_tracked, bf_st_tensor *tensors) {
    int n = 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        for (int p = 0; p < l->num_params; p++)
            if (l->param_index[p] >= 0) describe(&tensors[n++], &m->params[l->param_index[p]], host_params);
        for (int p = 0; p < 3; p++)
            if (l->buffer_index[p] >= 0) describe(&tensors[n++], &m->buffers[l->buffer_index[p]], host_buffers);
        int has_bn = l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->buffer_index[0] >= 0);
        if (!has_bn) continue;
        bf_st_tensor *t = &tensors[n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s.%s", l->name,
                 l->kind == BF_LAYER_FLEX ? "bn_logits.num_batches_tracked" : "num_batches_tracked");
        t->dtype = BF_DTYPE_I64;
        t->ndim = 0;
        t->data = batches_tracked;
        t->nbytes = sizeof(int64_t);
    }
    return n;
}

static bf_status download(bf_backend *b, const float *dev, size_t floats, float **host) {
    *host = malloc((floats ? floats : 1) * sizeof(float));
    if (!*host) return bf_error(BF_ERR_OOM, "checkpoint: out of host memory (%zu floats)", floats);
    return floats ? bf_to_host(b, *host, dev, floats * sizeof(float)) : BF_OK;
}

static void meta_set(bf_st_meta *meta, int *n, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void meta_set(bf_st_meta *meta, int *n, const char *key, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    snprintf(meta[*n].key, sizeof meta[*n].key, "%s", key);
    vsnprintf(meta[*n].value, sizeof meta[*n].value, fmt, ap);
    va_end(ap);
    (*n)++;
}

static bf_status write_model_file(const char *path, const bf_model *m) {
    float *params = NULL, *buffers = NULL;
    bf_st_tensor *tensors = malloc(((size_t)m->num_params + 4 * (size_t)m->num_layers + 1) * sizeof *tensors);
    bf_status s = tensors ? BF_OK : bf_error(BF_ERR_OOM, "checkpoint: out of host memory");
    if (s == BF_OK) s = download(m->backend, m->param_data, m->num_param_floats, &params);
    if (s == BF_OK) s = download(m->backend, m->buffer_data, m->num_buffer_floats, &buffers);
    if (s == BF_OK) {
        int64_t tracked = m->num_batches_tracked;
        int n = model_tensors(m, params, buffers, &tracked, tensors), nm = 0;
        bf_st_meta meta[4];
        meta_set(meta, &nm, "arch", "%s", m->arch);
        meta_set(meta, &nm, "num_classes", "%d", m->num_classes);
        s = bf_safetensors_write(path, tensors, n, meta, nm);
    }
    free(tensors);
    free(params);
    free(buffers);
    return s;
}

static const char *optimizer_name(bf_optimizer_kind k) {
    return k == BF_OPTIM_ADAMW ? "adamw" : k == BF_OPTIM_ADAM ? "adam" : "sgd";
}
/* Adam and AdamW keep the same two moments (PyTorch's state names); SGD one momentum buffer. */
static int has_adam_moments(bf_optimizer_kind k) { return k == BF_OPTIM_ADAMW || k == BF_OPTIM_ADAM; }

static bf_status write_state_file(const char *path, const bf_config *cfg, const bf_checkpoint_subject *m,
                                  const bf_optimizer *opt, const bf_train_state *st, const char *model_checksum) {
    float *state = NULL;
    bf_status s = download(m->backend, opt->state, bf_optimizer_state_floats(opt), &state);
    if (s == BF_OK) {
        bf_st_tensor t[2];
        int nt = 0;
        const char *names[2] = {has_adam_moments(opt->kind) ? "optimizer.exp_avg" : "optimizer.momentum", "optimizer.exp_avg_sq"};
        for (int i = 0; i < (has_adam_moments(opt->kind) ? 2 : 1); i++, nt++) {
            memset(&t[i], 0, sizeof t[i]);
            snprintf(t[i].name, sizeof t[i].name, "%s", names[i]);
            t[i].dtype = BF_DTYPE_F32;
            t[i].ndim = 1;
            t[i].shape[0] = (int64_t)opt->n;
            t[i].data = state + (size_t)i * opt->n;
            t[i].nbytes = opt->n * sizeof(float);
        }
        bf_st_meta meta[24];
        int nm = 0;
        meta_set(meta, &nm, "epoch", "%d", st->epoch);
        meta_set(meta, &nm, "step", "%ld", st->step);
        meta_set(meta, &nm, "seed", "%ld", st->seed);
        meta_set(meta, &nm, "optimizer", "%s", optimizer_name(opt->kind));
        meta_set(meta, &nm, "optimizer_steps", "%ld", opt->steps);
        meta_set(meta, &nm, "num_params", "%zu", m->num_param_floats);
        meta_set(meta, &nm, "arch", "%s", m->arch);
        /* Every random draw is a function of (seed, step) or (seed, epoch): restoring these two
         * restores the RNG, the dropout masks and the data order. */
        meta_set(meta, &nm, "rng", "counter-based: seed %ld, step %ld", st->seed, st->step);
        meta_set(meta, &nm, "data_order", "epoch %d, batch %d", st->epoch, st->batch_in_epoch);
        meta_set(meta, &nm, "batch_in_epoch", "%d", st->batch_in_epoch);
        if (st->batches_per_epoch > 0) meta_set(meta, &nm, "batches_per_epoch", "%d", st->batches_per_epoch);
        if (st->schedule_epoch || st->schedule_batch) /* a schedule restarted by a resume */
            meta_set(meta, &nm, "schedule_start", "%d %d", st->schedule_epoch, st->schedule_batch);
        if (st->eval_top1 >= 0) meta_set(meta, &nm, "eval_top1", "%.17g", st->eval_top1);
        if (st->interval_images > 0) /* %.17g: the device's float sums come back with the same bits */
            meta_set(meta, &nm, "interval_sums", "%.17g %.17g %ld", st->interval_loss, st->interval_correct,
                     st->interval_images);
        if (st->epoch_images > 0) meta_set(meta, &nm, "epoch_sums", "%.17g %ld", st->epoch_loss, st->epoch_images);
        if (st->skipped_images > 0) meta_set(meta, &nm, "skipped_images", "%ld", st->skipped_images);
        meta_set(meta, &nm, "config", "%s", cfg->source);
        char schedule[256];
        bf_schedule_describe(&cfg->optim, &cfg->schedule, cfg->run.epochs, schedule, sizeof schedule);
        meta_set(meta, &nm, "lr_schedule", "%s", schedule);
        if (st->data[0]) meta_set(meta, &nm, "data", "%s", st->data);
        char network[2048], learning[1024];
        bf_config_describe_network(cfg, network, sizeof network);
        bf_config_describe_learning(cfg, learning, sizeof learning);
        meta_set(meta, &nm, "network", "%s", network);
        meta_set(meta, &nm, "learning", "%s", learning);
        /* the weights written beside it: a state file moved next to other weights is refused */
        meta_set(meta, &nm, "model_checksum", "%s", model_checksum);
        s = bf_safetensors_write(path, t, nt, meta, nm);
    }
    free(state);
    return s;
}

static bf_status write_bf_model(const char *path, const void *model) { return write_model_file(path, model); }

static bf_checkpoint_subject model_subject(const bf_model *m) {
    return (bf_checkpoint_subject){.backend = m->backend, .num_param_floats = m->num_param_floats, .arch = m->arch,
                                   .write_model = write_bf_model, .model = m};
}

bf_status bf_checkpoint_save(const bf_config *cfg, const bf_model *m, const bf_optimizer *opt,
                             const bf_train_state *state, char *written) {
    bf_checkpoint_subject subject = model_subject(m);
    return bf_checkpoint_save_subject(cfg, &subject, opt, state, written);
}

/* Checkpoints inside an epoch are for resuming only: once `latest` names a newer checkpoint, the
 * older step_ directories (and any step_*.tmp a crash left) are removed, so frequent ones do not
 * fill the disk. Epoch checkpoints are kept. */
static bf_status remove_older_step_checkpoints(const char *root, const char *keep) {
    DIR *d = opendir(root);
    if (!d) return bf_error(BF_ERR_IO, "checkpoint: cannot list %s: %s", root, strerror(errno));
    bf_status s = BF_OK;
    struct dirent *e;
    while (s == BF_OK && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "step_", 5) != 0 || strcmp(e->d_name, keep) == 0) continue;
        char path[BF_PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        s = bf_remove_tree(path);
    }
    closedir(d);
    return s;
}

static int descending(const void *a, const void *b) { return *(const int *)b - *(const int *)a; }

/* [run] keep_checkpoints: of the epoch_NNNN checkpoints up to the one just written (epoch `newest`),
 * the `keep` newest stay and the others are removed. Later epochs stay too: a previous, longer run
 * left them, and a run resumed from an earlier epoch overwrites them as it gets there. */
static bf_status keep_newest_epoch_checkpoints(const char *root, int newest, int keep) {
    DIR *d = opendir(root);
    if (!d) return bf_error(BF_ERR_IO, "checkpoint: cannot list %s: %s", root, strerror(errno));
    int *epochs = NULL, n = 0, cap = 0;
    bf_status s = BF_OK;
    for (struct dirent *e; s == BF_OK && (e = readdir(d)) != NULL;) {
        int epoch = 0, end = 0;
        if (sscanf(e->d_name, "epoch_%d%n", &epoch, &end) != 1 || e->d_name[end] != '\0' || epoch > newest) continue;
        if (n == cap) {
            int *grown = realloc(epochs, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *epochs);
            if (!grown) s = bf_error(BF_ERR_OOM, "checkpoint: out of memory listing %s", root);
            else epochs = grown;
        }
        if (s == BF_OK) epochs[n++] = epoch;
    }
    closedir(d);
    if (s == BF_OK) qsort(epochs, (size_t)n, sizeof *epochs, descending);
    for (int i = keep; s == BF_OK && i < n; i++) {
        char path[BF_PATH_MAX + 64];
        snprintf(path, sizeof path, "%s/epoch_%04d", root, epochs[i]);
        s = bf_remove_tree(path);
    }
    free(epochs);
    return s;
}

/* Writes checkpoints/<name> (complete or not at all: a .tmp directory renamed into place). */
static bf_status write_checkpoint_dir(const bf_config *cfg, const bf_checkpoint_subject *m, const bf_optimizer *opt,
                                      const bf_train_state *state, const char *name, char *final_dir) {
    char root[BF_PATH_MAX + 32], tmp_dir[BF_PATH_MAX + 80], path[BF_PATH_MAX + 128];
    snprintf(root, sizeof root, "%s/checkpoints", cfg->run.dir);
    BF_TRY(bf_mkdir_p(root));
    snprintf(final_dir, BF_PATH_MAX + 64, "%s/%s", root, name);
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", final_dir);
    BF_TRY(bf_remove_tree(tmp_dir));
    BF_TRY(bf_mkdir_p(tmp_dir));
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_dir);
    BF_TRY(m->write_model(path, m->model));
    char model_checksum[9];
    BF_TRY(bf_safetensors_checksum(path, model_checksum));
    snprintf(path, sizeof path, "%s/state.safetensors", tmp_dir);
    BF_TRY(write_state_file(path, cfg, m, opt, state, model_checksum));
    /* The previous one (best, or an epoch written again) moves aside until the new one is in place,
     * so a crash in between leaves a complete copy under one of the two names. */
    char old_dir[BF_PATH_MAX + 80];
    snprintf(old_dir, sizeof old_dir, "%s.old", final_dir);
    BF_TRY(bf_remove_tree(old_dir));
    if (rename(final_dir, old_dir) != 0 && errno != ENOENT)
        return bf_error(BF_ERR_IO, "checkpoint: cannot move %s aside: %s", final_dir, strerror(errno));
    if (rename(tmp_dir, final_dir) != 0)
        return bf_error(BF_ERR_IO, "checkpoint: cannot rename %s to %s: %s", tmp_dir, final_dir, strerror(errno));
    bf_fsync_dir(root);
    return bf_remove_tree(old_dir);
}

bf_status bf_checkpoint_save_subject(const bf_config *cfg, const bf_checkpoint_subject *m, const bf_optimizer *opt,
                                     const bf_train_state *state, char *written) {
    char name[64], final_dir[BF_PATH_MAX + 64], root[BF_PATH_MAX + 32], path[BF_PATH_MAX + 64];
    if (state->batch_in_epoch > 0) snprintf(name, sizeof name, "step_%09ld", state->step);
    else snprintf(name, sizeof name, "epoch_%04d", state->epoch);
    BF_TRY(write_checkpoint_dir(cfg, m, opt, state, name, final_dir));
    snprintf(root, sizeof root, "%s/checkpoints", cfg->run.dir);
    snprintf(path, sizeof path, "%s/latest", root);
    char line[80];
    snprintf(line, sizeof line, "%s\n", name);
    BF_TRY(bf_write_file_atomic(path, line, strlen(line)));
    BF_TRY(remove_older_step_checkpoints(root, name));
    if (state->batch_in_epoch == 0 && cfg->run.keep_checkpoints > 0)
        BF_TRY(keep_newest_epoch_checkpoints(root, state->epoch, cfg->run.keep_checkpoints));
    if (written) snprintf(written, BF_PATH_MAX, "%s", final_dir);
    return BF_OK;
}

bf_status bf_checkpoint_save_best_subject(const bf_config *cfg, const bf_checkpoint_subject *m,
                                          const bf_optimizer *opt, const bf_train_state *state, char *written) {
    char final_dir[BF_PATH_MAX + 64];
    BF_TRY(write_checkpoint_dir(cfg, m, opt, state, "best", final_dir));
    if (written) snprintf(written, BF_PATH_MAX, "%s", final_dir);
    return BF_OK;
}

bf_status bf_checkpoint_save_best(const bf_config *cfg, const bf_model *m, const bf_optimizer *opt,
                                  const bf_train_state *state, char *written) {
    bf_checkpoint_subject subject = model_subject(m);
    return bf_checkpoint_save_best_subject(cfg, &subject, opt, state, written);
}

int bf_epoch_checkpoint_due(const bf_config *cfg, int epochs_done) {
    int every = cfg->run.checkpoint_every;
    return epochs_done == cfg->run.epochs || (every > 0 && epochs_done % every == 0);
}

bf_status bf_checkpoint_read_best_top1(const char *run_dir, double *top1) {
    *top1 = -1;
    char path[BF_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/checkpoints/best/state.safetensors", run_dir);
    /* best.old: a crash while best was written again left the previous best there alone
     * (write_checkpoint_dir); without it the resumed run would take any score as its best */
    if (access(path, R_OK) != 0) snprintf(path, sizeof path, "%s/checkpoints/best.old/state.safetensors", run_dir);
    if (access(path, R_OK) != 0) return BF_OK; /* no best yet */
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    const char *v = bf_safetensors_meta(f, "eval_top1");
    bf_status s = BF_OK;
    if (v) {
        /* The value every later evaluation must beat: strtod alone took "nan" (never beaten), "abc"
         * (0, always beaten) and numbers no top-1 can be, so checked as meta_long checks integers */
        char *end = NULL;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < 0 || x > 1)
            s = bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"eval_top1\" = \"%s\" is not a top-1 in [0, 1]", path, v);
        else
            *top1 = x;
    }
    bf_safetensors_close(f);
    return s;
}

/* Reads a `latest` file (one checkpoint name) into dir_out: that name beside the file. */
static bf_status follow_latest(const char *latest, const char *given, char *dir_out) {
    FILE *f = fopen(latest, "r");
    if (!f) return bf_error(BF_ERR_IO, "%s: cannot open: %s", latest, strerror(errno));
    char name[64] = {0};
    int ok = fgets(name, sizeof name, f) != NULL;
    fclose(f);
    name[strcspn(name, "\r\n")] = 0;
    if (!ok || !name[0] || strchr(name, '/')) return bf_error(BF_ERR_CHECKPOINT, "%s: malformed (expected a checkpoint name)", latest);
    const char *slash = strrchr(latest, '/');
    int dir_len = slash ? (int)(slash - latest) : 1;
    snprintf(dir_out, BF_PATH_MAX, "%.*s/%s", dir_len, slash ? latest : ".", name);
    char probe[BF_PATH_MAX + 64];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/model.safetensors", dir_out);
    if (stat(probe, &st) == 0) return BF_OK;
    /* A checkpoint written again (an epoch redone after resuming from an earlier one, best) sits
     * complete under NAME.old while its new copy is renamed into place (write_checkpoint_dir): a
     * crash between the two renames leaves `latest` naming a directory that is not there. */
    snprintf(probe, sizeof probe, "%s.old/model.safetensors", dir_out);
    if (strlen(dir_out) + sizeof ".old" <= BF_PATH_MAX && stat(probe, &st) == 0) {
        strcat(dir_out, ".old");
        return BF_OK;
    }
    return bf_error(BF_ERR_CHECKPOINT, "%s names %s, which has no model.safetensors", given, dir_out);
}

/* Accepts what a researcher is likely to pass: a checkpoint directory, a run directory, its
 * checkpoints/ directory, or the checkpoints/latest file itself. */
bf_status bf_checkpoint_resolve(const char *path, char *dir_out) {
    char probe[BF_PATH_MAX + 64];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/model.safetensors", path);
    if (stat(probe, &st) == 0) {
        snprintf(dir_out, BF_PATH_MAX, "%s", path);
        return BF_OK;
    }
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        size_t len = strlen(base);
        if (strcmp(base, "latest") == 0) return follow_latest(path, path, dir_out);
        if (len > 12 && strcmp(base + len - 12, ".safetensors") == 0) { /* a checkpoint's file: its directory */
            snprintf(dir_out, BF_PATH_MAX, "%.*s", base == path ? 1 : (int)(base - path - 1), base == path ? "." : path);
            snprintf(probe, sizeof probe, "%s/model.safetensors", dir_out);
            if (stat(probe, &st) == 0) return BF_OK;
        }
        return bf_error(BF_ERR_CHECKPOINT, "%s is a file, not a checkpoint: give the checkpoint directory (with "
                        "model.safetensors and state.safetensors), the run directory or checkpoints/latest", path);
    }
    snprintf(probe, sizeof probe, "%s/checkpoints/latest", path);
    if (stat(probe, &st) == 0) return follow_latest(probe, path, dir_out);
    snprintf(probe, sizeof probe, "%s/latest", path);
    if (stat(probe, &st) == 0) return follow_latest(probe, path, dir_out);
    return bf_error(BF_ERR_CHECKPOINT, "%s is not a checkpoint: expected a checkpoint directory (with model.safetensors), "
                                       "a run directory (with checkpoints/latest), its checkpoints/ directory or the "
                                       "latest file", path);
}

/* Whether `name` is the batch-norm on the logits of a channel-wise max flex layer: FlexNet's
 * released code builds it in every Flex2D and never uses it under that joint (flexnet.md 2.1), so
 * its Exp 4 weights hold 13 inert bn_logits.* that this model rightly lacks. */
static int inert_logits_bn(const bf_model *m, const char *name) {
    const char *dot = strstr(name, ".bn_logits.");
    if (!dot) return 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_FLEX && l->flex_opt.joint == BF_FLEX_JOINT_MAX && strlen(l->name) == (size_t)(dot - name) &&
            strncmp(l->name, name, (size_t)(dot - name)) == 0)
            return 1;
    }
    return 0;
}

/* Whether `name` is the threshold of a mask-joint flex layer that does not learn it ([model]
 * threshold_mode = frozen_random or resample_each_forward): the reference code never saved such a
 * T (FlexNet's GPU runs: not registered) or saved it in a shape of its own (PlasticFlex: [1, C, H,
 * W]), and its loaders drop it (specs/README 1-2), so a file without it, or with another shape,
 * leaves the model's own draw. */
static int unlearned_threshold(const bf_model *m, const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot || strcmp(dot, ".threshold") != 0) return 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_FLEX && l->flex_opt.joint == BF_FLEX_JOINT_MASK &&
            l->flex_opt.threshold_mode != BF_THRESHOLD_LEARNED && strlen(l->name) == (size_t)(dot - name) &&
            strncmp(l->name, name, (size_t)(dot - name)) == 0)
            return 1;
    }
    return 0;
}

/* Whether `name` is a conv tensor of a static pool site ([model] static_routing): a flex model's
 * weights, loaded into its MaxPrefResNet, hold the conv that this site no longer has. */
static int static_pool_conv(const bf_model *m, const char *name) {
    const char *dot = strstr(name, ".flex_conv.");
    if (!dot || (strcmp(dot, ".flex_conv.weight") != 0 && strcmp(dot, ".flex_conv.bias") != 0)) return 0;
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        if (l->kind == BF_LAYER_FLEX && !bf_flex_has_conv(l) && strlen(l->name) == (size_t)(dot - name) &&
            strncmp(l->name, name, (size_t)(dot - name)) == 0)
            return 1;
    }
    return 0;
}

/* Tensors a file may hold that this model lacks by design, passed over by the loaders. */
static int absent_by_design(const bf_model *m, const char *name) { return inert_logits_bn(m, name) || static_pool_conv(m, name); }

/* [model] bn_var_floor: loaded running variances below a batch-norm's floor are raised to it, as
 * its every update does (host copy of the buffers, before they go to the device). */
static void floor_running_vars(const bf_model *m, float *host_buffers) {
    for (int i = 0; i < m->num_layers; i++) {
        const bf_layer *l = &m->layers[i];
        const int normalises = l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->flex_opt.logits_bn);
        if (!normalises || l->bn.var_floor <= 0 || l->buffer_index[1] < 0) continue;
        const bf_param *var = &m->buffers[l->buffer_index[1]];
        for (size_t k = 0; k < var->count; k++)
            if (host_buffers[var->offset + k] < l->bn.var_floor) host_buffers[var->offset + k] = l->bn.var_floor;
    }
}

/* A file with more or fewer tensors than the model: the counts alone leave a researcher guessing
 * which layer differs (another depth, flex on one more conv, a reference file's extra buffer), so
 * the error names the first tensor the model wants that the file lacks and the first the file holds
 * that the model has no place for, with how many more of each. */
static bf_status tensor_count_error(const char *path, const bf_st_file *f, const bf_model *m,
                                    const bf_st_tensor *tensors, int n, int held) {
    const char *lacking = NULL, *unwanted = NULL;
    int num_lacking = 0, num_unwanted = 0;
    for (int i = 0; i < n; i++)
        if (!bf_safetensors_find(f, tensors[i].name) && num_lacking++ == 0) lacking = tensors[i].name;
    for (int i = 0; i < bf_safetensors_count(f); i++) {
        const char *name = bf_safetensors_at(f, i)->name;
        int wanted = absent_by_design(m, name);
        for (int k = 0; k < n && !wanted; k++) wanted = strcmp(tensors[k].name, name) == 0;
        if (!wanted && num_unwanted++ == 0) unwanted = name;
    }
    char lacks[BF_PATH_MAX] = "", extra[BF_PATH_MAX] = "", more[2][32] = {"", ""};
    if (num_lacking > 1) snprintf(more[0], sizeof more[0], " (and %d more)", num_lacking - 1);
    if (num_unwanted > 1) snprintf(more[1], sizeof more[1], " (and %d more)", num_unwanted - 1);
    if (lacking) snprintf(lacks, sizeof lacks, "; it lacks %s%s", lacking, more[0]);
    if (unwanted) snprintf(extra, sizeof extra, "; it holds %s%s, which the model does not have", unwanted, more[1]);
    return bf_error(BF_ERR_CHECKPOINT, "%s holds %d tensors, the %s model has %d%s%s: the checkpoint is of another "
                    "model or configuration", path, held, m->arch, n, lacks, extra);
}

bf_status bf_checkpoint_load_model(const char *dir, bf_model *m) {
    char path[BF_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    float *params = malloc((m->num_param_floats + 1) * sizeof(float));
    float *buffers = malloc((m->num_buffer_floats + 1) * sizeof(float));
    bf_st_tensor *tensors = malloc(((size_t)m->num_params + 4 * (size_t)m->num_layers + 1) * sizeof *tensors);
    bf_status s = params && buffers && tensors ? BF_OK : bf_error(BF_ERR_OOM, "checkpoint: out of host memory");
    int64_t tracked = 0;
    int n = s == BF_OK ? model_tensors(m, params, buffers, &tracked, tensors) : 0;
    int held = 0; /* the file's tensors this model has (or should have) */
    for (int i = 0; s == BF_OK && i < bf_safetensors_count(f); i++) held += !absent_by_design(m, bf_safetensors_at(f, i)->name);
    if (s == BF_OK && held != n) s = tensor_count_error(path, f, m, tensors, n, held);
    for (int i = 0; i < n && s == BF_OK; i++)
        s = bf_safetensors_copy_out(f, tensors[i].name, tensors[i].dtype, tensors[i].ndim, tensors[i].shape,
                                    (void *)tensors[i].data);
    if (s == BF_OK) floor_running_vars(m, buffers);
    if (s == BF_OK) s = bf_to_device(m->backend, m->param_data, params, m->num_param_floats * sizeof(float));
    if (s == BF_OK && m->num_buffer_floats)
        s = bf_to_device(m->backend, m->buffer_data, buffers, m->num_buffer_floats * sizeof(float));
    if (s == BF_OK) m->num_batches_tracked = tracked;
    free(params);
    free(buffers);
    free(tensors);
    bf_safetensors_close(f);
    return s;
}

bf_status bf_checkpoint_weights_file(const char *path, char *file_out) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && strcmp(strrchr(path, '/') ? strrchr(path, '/') + 1 : path, "latest")) {
        snprintf(file_out, BF_PATH_MAX, "%s", path);
        return BF_OK;
    }
    char dir[BF_PATH_MAX];
    BF_TRY(bf_checkpoint_resolve(path, dir));
    if (strlen(dir) + sizeof "/model.safetensors" > BF_PATH_MAX)
        return bf_error(BF_ERR_ARG, "checkpoint path too long: %s", dir);
    snprintf(file_out, BF_PATH_MAX, "%s/model.safetensors", dir);
    return BF_OK;
}

static int same_shape(const bf_st_tensor *a, const bf_st_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

bf_status bf_checkpoint_init_weights(const char *path, const char *exclude, bf_model *m) {
    char file[BF_PATH_MAX];
    BF_TRY(bf_checkpoint_weights_file(path, file));
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(file, &f));
    float *params = NULL, *buffers = NULL; /* start from the model's own initialisation: excluded tensors keep it */
    bf_st_tensor *tensors = malloc(((size_t)m->num_params + 4 * (size_t)m->num_layers + 1) * sizeof *tensors);
    bf_status s = tensors ? BF_OK : bf_error(BF_ERR_OOM, "init_weights: out of host memory");
    if (s == BF_OK) s = download(m->backend, m->param_data, m->num_param_floats, &params);
    if (s == BF_OK) s = download(m->backend, m->buffer_data, m->num_buffer_floats, &buffers);
    int64_t tracked = m->num_batches_tracked, from_file = -1;
    int n = s == BF_OK ? model_tensors(m, params, buffers, &tracked, tensors) : 0, copied = 0;
    for (int i = 0; i < n && s == BF_OK; i++) {
        if (bf_name_in_prefixes(tensors[i].name, exclude)) continue;
        const bf_st_tensor *in_file = bf_safetensors_find(f, tensors[i].name);
        if (unlearned_threshold(m, tensors[i].name) && (!in_file || !same_shape(in_file, &tensors[i])))
            continue;
        if (!in_file)
            s = bf_error(BF_ERR_CHECKPOINT, "[model] init_weights: %s has no tensor %s, which this %s model has (leave "
                         "it at its initialisation with [model] init_exclude)", file, tensors[i].name, m->arch);
        else if (tensors[i].dtype == BF_DTYPE_I64) /* one counter for the model: the first batch-norm's */
            s = from_file < 0 ? bf_safetensors_copy_out(f, tensors[i].name, BF_DTYPE_I64, 0, NULL, &from_file) : BF_OK;
        else
            s = bf_safetensors_copy_out(f, tensors[i].name, tensors[i].dtype, tensors[i].ndim, tensors[i].shape,
                                        (void *)tensors[i].data);
        if (s == BF_ERR_CHECKPOINT && in_file) { /* a shape or dtype mismatch: most often a head for another number of classes */
            char why[512];
            snprintf(why, sizeof why, "%s", bf_last_error());
            s = bf_error(s, "[model] init_weights: %s (to keep this model's own %s, add its layer to [model] init_exclude)",
                         why, tensors[i].name);
        }
        copied++;
    }
    for (int i = 0; i < bf_safetensors_count(f) && s == BF_OK; i++) { /* e.g. "module." prefixes of a DDP state_dict */
        const char *name = bf_safetensors_at(f, i)->name;
        int known = bf_name_in_prefixes(name, exclude) || absent_by_design(m, name) || unlearned_threshold(m, name);
        for (int k = 0; k < n && !known; k++) known = strcmp(tensors[k].name, name) == 0;
        if (!known)
            s = bf_error(BF_ERR_CHECKPOINT, "[model] init_weights: %s holds %s, which this %s model does not have (another "
                         "architecture or naming?)", file, name, m->arch);
    }
    if (s == BF_OK) floor_running_vars(m, buffers);
    if (s == BF_OK) s = bf_to_device(m->backend, m->param_data, params, m->num_param_floats * sizeof(float));
    if (s == BF_OK && m->num_buffer_floats)
        s = bf_to_device(m->backend, m->buffer_data, buffers, m->num_buffer_floats * sizeof(float));
    if (s == BF_OK && from_file >= 0) m->num_batches_tracked = from_file;
    if (s == BF_OK && copied == 0) s = bf_error(BF_ERR_CHECKPOINT, "[model] init_weights: init_exclude leaves nothing to load from %s", file);
    free(params);
    free(buffers);
    free(tensors);
    bf_safetensors_close(f);
    return s;
}

static bf_status meta_long(const bf_st_file *f, const char *path, const char *key, long *out) {
    const char *v = bf_safetensors_meta(f, key);
    char *end = NULL;
    if (!v) return bf_error(BF_ERR_CHECKPOINT, "%s: metadata key \"%s\" is missing", path, key);
    errno = 0;
    *out = strtol(v, &end, 10);
    if (errno || end == v || *end) return bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"%s\" = \"%s\" is not an integer", path, key, v);
    return BF_OK;
}

/* The counts a run goes on adding to (epochs, steps, optimiser steps, batches): at most MAX_COUNT,
 * far beyond any run and far enough below LONG_MAX that the additions cannot overflow. */
#define MAX_COUNT (LONG_MAX / 4)

/* meta_long, refused outside [lo, hi]: a state file edited to a negative or huge position would
 * otherwise fail later, far from the file (the loader's epoch, the optimiser's step), or wrap. */
static bf_status meta_long_in(const bf_st_file *f, const char *path, const char *key, long lo, long hi, long *out) {
    BF_TRY(meta_long(f, path, key, out));
    if (*out < lo || *out > hi)
        return bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"%s\" = %ld is out of range [%ld, %ld]", path, key, *out, lo, hi);
    return BF_OK;
}

/* "interval_sums" (loss, correct answers, images) and "epoch_sums" (loss, images): what the run had
 * trained but not yet logged (bf_train_state); absent, nothing was pending. */
static bf_status read_pending_sums(const bf_st_file *f, const char *path, bf_train_state *state) {
    state->interval_loss = state->interval_correct = state->epoch_loss = 0;
    state->interval_images = state->epoch_images = 0;
    const char *keys[2] = {"interval_sums", "epoch_sums"};
    for (int k = 0; k < 2; k++) {
        const char *text = bf_safetensors_meta(f, keys[k]);
        if (!text) continue;
        double sum[2] = {0, 0};
        long images = 0;
        const char *at = text;
        char *end = NULL;
        int sums = k == 0 ? 2 : 1, ok = 1;
        errno = 0;
        for (int i = 0; i < sums && ok; i++, at = end) {
            sum[i] = strtod(at, &end);
            ok = end != at && isfinite(sum[i]) && sum[i] >= 0;
        }
        if (ok) images = strtol(at, &end, 10);
        if (!ok || errno || end == at || *end || images <= 0 || images > MAX_COUNT)
            return bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"%s\" = \"%s\" is not %s and a count of images", path,
                            keys[k], text, k == 0 ? "two sums (loss, correct answers) >= 0" : "a loss sum >= 0");
        if (k == 0) state->interval_loss = sum[0], state->interval_correct = sum[1], state->interval_images = images;
        else state->epoch_loss = sum[0], state->epoch_images = images;
    }
    return BF_OK;
}

bf_status bf_checkpoint_network(const char *dir, char *network, size_t cap, int *recorded) {
    char path[BF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    const char *phrase = bf_safetensors_meta(f, "network");
    *recorded = phrase != NULL;
    snprintf(network, cap, "%s", phrase ? phrase : "");
    bf_safetensors_close(f);
    return BF_OK;
}

/* Whether dir/model.safetensors is the file the state file `f` (at `path`) was written beside: its
 * "model_checksum" (absent before 2026-12-05: nothing to check). A checkpoint directory whose two
 * files came from different checkpoints would resume, or be evaluated, as neither. */
static bf_status check_weights_checksum(const bf_st_file *f, const char *path, const char *dir) {
    const char *model_checksum = bf_safetensors_meta(f, "model_checksum");
    if (!model_checksum) return BF_OK;
    char model_path[BF_PATH_MAX + 64], found[9];
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
    BF_TRY(bf_safetensors_checksum(model_path, found));
    if (strcmp(found, model_checksum) != 0)
        return bf_error(BF_ERR_CHECKPOINT, "%s was written beside weights with checksum %s, but %s has %s: the two "
                        "files come from different checkpoints", path, model_checksum, model_path, found);
    return BF_OK;
}

bf_status bf_checkpoint_check_weights(const char *dir) {
    char path[BF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    struct stat st;
    if (stat(path, &st) != 0) return BF_OK; /* weights alone (a converted checkpoint): nothing to compare */
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    const bf_status s = check_weights_checksum(f, path, dir);
    bf_safetensors_close(f);
    return s;
}

bf_status bf_checkpoint_epoch(const char *dir, int *epoch) {
    char path[BF_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    long e = 0;
    bf_status s = meta_long(f, path, "epoch", &e);
    if (s == BF_OK && (e < 0 || e > INT_MAX)) s = bf_error(BF_ERR_CHECKPOINT, "%s: epoch %ld out of range", path, e);
    if (s == BF_OK) *epoch = (int)e;
    bf_safetensors_close(f);
    return s;
}

bf_status bf_checkpoint_load_state(const char *dir, const bf_config *cfg, const bf_model *m, bf_optimizer *opt,
                                   bf_train_state *state) {
    bf_checkpoint_subject subject = model_subject(m);
    return bf_checkpoint_load_state_subject(dir, cfg, &subject, opt, state);
}

bf_status bf_checkpoint_load_state_subject(const char *dir, const bf_config *cfg, const bf_checkpoint_subject *m,
                                           bf_optimizer *opt, bf_train_state *state) {
    char path[BF_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    bf_st_file *f = NULL;
    BF_TRY(bf_safetensors_read(path, &f));
    long epoch = 0, step = 0, seed = 0, num_params = 0, opt_steps = 0;
    /* the epoch is an int, and resume.c names the next one (epoch + 1) */
    bf_status s = meta_long_in(f, path, "epoch", 0, INT_MAX - 1, &epoch);
    if (s == BF_OK) s = meta_long_in(f, path, "step", 0, MAX_COUNT, &step);
    if (s == BF_OK) s = meta_long(f, path, "seed", &seed);
    if (s == BF_OK) s = meta_long(f, path, "num_params", &num_params);
    if (s == BF_OK) s = meta_long_in(f, path, "optimizer_steps", 0, MAX_COUNT, &opt_steps);
    long batch_in_epoch = 0; /* absent in checkpoints written before mid-epoch ones existed: 0 */
    if (s == BF_OK && bf_safetensors_meta(f, "batch_in_epoch"))
        s = meta_long_in(f, path, "batch_in_epoch", 0, INT_MAX, &batch_in_epoch);
    const char *kind = bf_safetensors_meta(f, "optimizer");
    if (s == BF_OK && (!kind || strcmp(kind, optimizer_name(opt->kind)) != 0))
        s = bf_error(BF_ERR_CHECKPOINT, "%s was written by optimizer \"%s\", the config uses \"%s\" ([optim] optimizer)",
                     path, kind ? kind : "?", optimizer_name(opt->kind));
    if (s == BF_OK && (size_t)num_params != m->num_param_floats)
        s = bf_error(BF_ERR_CHECKPOINT, "%s is for a model with %ld parameters, this %s has %zu", path, num_params,
                     m->arch, m->num_param_floats);
    if (s == BF_OK) s = check_weights_checksum(f, path, dir);
    if (s == BF_OK && seed != cfg->run.seed)
        s = bf_error(BF_ERR_CHECKPOINT, "%s was trained with seed %ld but [run] seed = %ld: resuming would change the "
                     "data order (set --set run.seed=%ld)", path, seed, cfg->run.seed, seed);
    float *host = NULL;
    if (s == BF_OK) {
        host = malloc((bf_optimizer_state_floats(opt) + 1) * sizeof(float));
        if (!host) s = bf_error(BF_ERR_OOM, "checkpoint: out of host memory");
    }
    int64_t shape[1] = {(int64_t)opt->n};
    if (s == BF_OK)
        s = bf_safetensors_copy_out(f, has_adam_moments(opt->kind) ? "optimizer.exp_avg" : "optimizer.momentum",
                                    BF_DTYPE_F32, 1, shape, host);
    if (s == BF_OK && has_adam_moments(opt->kind))
        s = bf_safetensors_copy_out(f, "optimizer.exp_avg_sq", BF_DTYPE_F32, 1, shape, host + opt->n);
    if (s == BF_OK) s = bf_to_device(m->backend, opt->state, host, bf_optimizer_state_floats(opt) * sizeof(float));
    if (s == BF_OK) {
        opt->steps = opt_steps;
        state->epoch = (int)epoch;
        state->step = step;
        state->seed = seed;
        state->batch_in_epoch = (int)batch_in_epoch;
        /* absent: the schedule starts at the run's start */
        const char *start = bf_safetensors_meta(f, "schedule_start");
        state->schedule_epoch = state->schedule_batch = 0;
        if (start) { /* strtol, not sscanf's %d: a number past INT_MAX is refused, not undefined */
            char *mid = NULL, *end = NULL;
            errno = 0;
            long se = strtol(start, &mid, 10), sb = strtol(mid, &end, 10);
            if (errno || mid == start || end == mid || *end || se < 0 || se > state->epoch || sb < 0 || sb > INT_MAX)
                s = bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"schedule_start\" = \"%s\" is not an epoch and a batch at or "
                             "before the checkpoint's", path, start);
            else
                state->schedule_epoch = (int)se, state->schedule_batch = (int)sb;
        }
    }
    if (s == BF_OK) {
        const char *schedule = bf_safetensors_meta(f, "lr_schedule");
        snprintf(state->lr_schedule, sizeof state->lr_schedule, "%s", schedule ? schedule : "");
        const char *data = bf_safetensors_meta(f, "data");
        snprintf(state->data, sizeof state->data, "%s", data ? data : "");
        const char *batches = bf_safetensors_meta(f, "batches_per_epoch");
        long per_epoch = 0; /* absent before it was written: 0. meta_long, not atoi: "abc" is no count */
        if (s == BF_OK && batches) s = meta_long_in(f, path, "batches_per_epoch", 0, INT_MAX, &per_epoch);
        state->batches_per_epoch = (int)per_epoch;
        if (s == BF_OK && state->batches_per_epoch > 0 && state->batch_in_epoch > state->batches_per_epoch)
            s = bf_error(BF_ERR_CHECKPOINT, "%s: metadata \"batches_per_epoch\" = \"%s\" is not a count at or past its "
                         "batch_in_epoch %d", path, batches, state->batch_in_epoch);
        const char *network = bf_safetensors_meta(f, "network"), *learning = bf_safetensors_meta(f, "learning");
        state->has_network = network != NULL;
        snprintf(state->network, sizeof state->network, "%s", network ? network : "");
        snprintf(state->learning, sizeof state->learning, "%s", learning ? learning : "");
    }
    if (s == BF_OK) s = read_pending_sums(f, path, state);
    long skipped = 0; /* absent: none skipped, or a checkpoint from before it was written */
    if (s == BF_OK && bf_safetensors_meta(f, "skipped_images"))
        s = meta_long_in(f, path, "skipped_images", 0, MAX_COUNT, &skipped);
    state->skipped_images = skipped;
    free(host);
    bf_safetensors_close(f);
    return s;
}

/* mpi_data_parallel.c - data parallelism over MPI on the CPU backend (registered as the ctest
 * mpi_data_parallel when CMake found MPI).
 *
 * Run by ctest without arguments it is the driver: it trains a tiny CNN without batch-norm (so
 * the ranks' forward passes do not depend on how the batch is split) once in one process and once
 * under `mpirun -np 2` with the same global batch, and checks
 *   - the final weights agree to 1e-6 relative (read from both checkpoints' model.safetensors);
 *   - the evaluation covers the whole test split once, and the MPI run wrote each checkpoint and
 *     each metrics line once (rank 0 only);
 *   - with batch-norm and [run] sync_bn the same holds (and with local statistics it does not), also
 *     for a flex layer's logits batch-norm, and
 *     the 2 ranks' evaluation (rank 0's running statistics) scores what bioflex-eval does;
 *   - a rate-coded LIF CNN with dropout ends at one process's weights too (its random draws are
 *     keyed by the sample's place in the global batch), and its 2 ranks' evaluation scores what
 *     bioflex-eval does in one process with evaluation batches of another size;
 *   - so does the CNN with dropout trained in slices ([data] micro_batches = 2, gradient accumulation);
 *   - every metrics line of the 2-rank run logs comm_exposed_ms, the time inside the gradient
 *     all-reduce per step: > 0 and < ms_per_step; the single-process run logs none;
 *   - a BU-TD network (Counter-Hebb, separate weights; its own training loop) agrees the same way,
 *     and so does a guided one on part of Multi-Fashion-MNIST, with the same per-task evaluation,
 *     and a BU-TD ResNet-18 with batch-norm and [run] sync_bn (BU and TD statistics, running ones too);
 *   - a run resumed in one process from a checkpoint of the 2-rank run ends at the same weights;
 *   - SIGUSR1 to mpirun itself leaves a step checkpoint that resumes (SIGTERM to mpirun reaches
 *     the ranks too late: see the comment at that case);
 *   - SIGTERM to rank 1 alone stops both ranks at the same step with one checkpoint of that
 *     position (inside an epoch), and the run resumed from it ends where an uninterrupted one does;
 *   - mismatched configs between ranks (the error names the differing line; one config under two
 *     paths is the same config), ranks resumed from different checkpoints, different data files
 *     under the same config, a global batch the ranks cannot split, too few samples per rank, and
 *     tasks that Slurm started without an MPI plugin fail with a message and exit status 2 (a
 *     config error, which every rank reaches together and leaves MPI normally on); a global batch
 *     that does not divide the data is noted;
 *   - a rank that hangs, and a rank that dies, make the other stop within the collective timeout.
 * The last two run this program itself under mpirun with --hang-rank / --die-rank. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bioflex/comm.h"
#include "bioflex/safetensors.h"
#include "comm_exposed_check.h"
#include "testutil.h"

#ifndef BIOFLEX_MPIEXEC
#define BIOFLEX_MPIEXEC "mpirun"
#endif
#define TRAIN BIOFLEX_BINARY_DIR "/bioflex-train"
/* Root in CI containers, 2 ranks on however many cores there are; `timeout` keeps a broken
 * collective from hanging the test itself. */
#define MPIRUN "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 2 "

static char tmp[256];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Runs a shell command with its output in log; returns its exit status. */
static int run(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(const char *log, const char *fmt, ...) {
    char cmd[2048], full[2400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "OMP_WAIT_POLICY=passive %s > %s/%s 2>&1", cmd, tmp, log);
    int rc = system(full);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

/* How often `needle` occurs in the file tmp/name. */
static int count_in_file(const char *name, const char *needle) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        for (const char *p = line; (p = strstr(p, needle)); p += strlen(needle)) n++;
    fclose(f);
    return n;
}

/* comm_exposed_ms in the train lines of tmp/name (comm_exposed_check.h); the MPI all-reduce
 * blocks, so its time is never 0. */
static int check_comm_exposed(const char *name, int want) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    return check_comm_exposed_file(path, want, 0);
}

/* The number after "key": on the last line of tmp/name that has it (-1 when none). */
static double last_value(const char *name, const char *key) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    return bf_test_last_json_number(path, key);
}

/* Every tensor of two model.safetensors files equal to 1e-6 relative (1e-7 absolute near 0). */
static void compare_weights(const char *dir_a, const char *dir_b, const char *what) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s/model.safetensors", tmp, dir_a);
    snprintf(pb, sizeof pb, "%s/%s/model.safetensors", tmp, dir_b);
    bf_st_file *a = NULL, *b = NULL;
    CHECK_OK(bf_safetensors_read(pa, &a));
    CHECK_OK(bf_safetensors_read(pb, &b));
    if (!a || !b) {
        bf_safetensors_close(a);
        bf_safetensors_close(b);
        return;
    }
    CHECK(bf_safetensors_count(a) == bf_safetensors_count(b), "%s: %d vs %d tensors", what, bf_safetensors_count(a),
          bf_safetensors_count(b));
    size_t floats = 0;
    double worst = 0, max_abs = 0;
    for (int i = 0; i < bf_safetensors_count(a); i++) {
        const bf_st_tensor *ta = bf_safetensors_at(a, i), *tb = bf_safetensors_find(b, ta->name);
        CHECK(tb != NULL, "%s: tensor %s missing from %s", what, ta->name, pb);
        if (!tb || ta->dtype != BF_DTYPE_F32) continue;
        CHECK(ta->nbytes == tb->nbytes, "%s: %s has %zu vs %zu bytes", what, ta->name, ta->nbytes, tb->nbytes);
        if (ta->nbytes != tb->nbytes) continue;
        size_t n = ta->nbytes / sizeof(float), at = 0;
        const float *x = ta->data, *y = tb->data;
        double v = bf_test_max_violation(x, y, n, 1e-7, 1e-6, &at);
        CHECK(v <= 1.0, "%s: %s[%zu] = %.9g vs %.9g (beyond 1e-6 relative)", what, ta->name, at, x[at], y[at]);
        for (size_t k = 0; k < n; k++) max_abs = fmax(max_abs, fabs((double)x[k] - y[k]));
        worst = fmax(worst, v);
        floats += n;
    }
    CHECK(floats > 100, "%s: compared only %zu floats", what, floats);
    printf("%s: %zu weights, max |diff| %.3g, worst tolerance use %.3f\n", what, floats, max_abs, worst);
    bf_safetensors_close(a);
    bf_safetensors_close(b);
}

/* The largest |a - b| over the float tensors two runs' model.safetensors files share. */
static double max_abs_diff(const char *dir_a, const char *dir_b) {
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s/model.safetensors", tmp, dir_a);
    snprintf(pb, sizeof pb, "%s/%s/model.safetensors", tmp, dir_b);
    return bf_test_weights_max_abs_diff(pa, pb);
}

/* Weights that moved: the comparison above means something only if training changed them. */
static void check_trained(const char *dir_first, const char *dir_last) {
    double moved = max_abs_diff(dir_first, dir_last);
    CHECK(moved > 1e-3, "the weights moved only %g between epochs 1 and 2", moved);
}

/* The test loss and accuracy of a BU-TD run's last epoch line ("... test loss L, test accuracy A
 * %..."), the same in both logs: the sharded evaluation summed over the ranks scores what one
 * process does. */
static void same_final_eval(const char *log_a, const char *log_b, const char *what) {
    char last[2][512] = {"", ""};
    const char *logs[2] = {log_a, log_b};
    for (int i = 0; i < 2; i++) {
        char path[512], line[512];
        snprintf(path, sizeof path, "%s/%s", tmp, logs[i]);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "test loss");
            if (strncmp(line, "epoch ", 6) == 0 && p) snprintf(last[i], sizeof last[i], "%.*s", (int)strcspn(p, "("), p);
        }
        if (f) fclose(f);
    }
    CHECK(last[0][0] && strcmp(last[0], last[1]) == 0, "%s: final evaluation '%s' (1 process) vs '%s' (2 ranks)", what,
          last[0], last[1]);
    printf("%s: final evaluation %s in both\n", what, last[0]);
}

/* The final score a training log prints ("test accuracy: A% top-1, ...% top-5, loss L") and the
 * one bioflex-eval prints ("test: loss L top-1 A%"), to the digits printed: equal. */
static void same_as_bioflex_eval(const char *train_log, const char *eval_log, const char *what) {
    double train_top1 = -1, train_loss = -1, eval_top1 = -2, eval_loss = -2;
    char log_path[600], text[512];
    snprintf(log_path, sizeof log_path, "%s/%s", tmp, train_log);
    FILE *log = fopen(log_path, "r");
    while (log && fgets(text, sizeof text, log))
        if (!strncmp(text, "test accuracy:", 14))
            sscanf(text, "test accuracy: %lf%% top-1, %*f%% top-5, loss %lf", &train_top1, &train_loss);
    if (log) fclose(log);
    snprintf(log_path, sizeof log_path, "%s/%s", tmp, eval_log);
    log = fopen(log_path, "r");
    while (log && fgets(text, sizeof text, log))
        if (!strncmp(text, "test:", 5)) sscanf(text, "test: loss %lf top-1 %lf%%", &eval_loss, &eval_top1);
    if (log) fclose(log);
    CHECK(train_top1 >= 0 && train_top1 == eval_top1 && train_loss == eval_loss,
          "%s: 2 ranks' final evaluation %.2f%% / %.4f, bioflex-eval of their checkpoint %.2f%% / %.4f", what, train_top1,
          train_loss, eval_top1, eval_loss);
}

/* cfg with the --set options `sets` trained in one process (tmp/<name>_single) and on 2 ranks
 * (tmp/<name>_mpi, logs beside them): both must finish, at the same final weights. */
static void single_and_two_ranks(const char *name, const char *cfg, const char *sets, const char *what) {
    char log[128], dirs[2][128];
    snprintf(dirs[0], sizeof dirs[0], "%s_single", name);
    snprintf(dirs[1], sizeof dirs[1], "%s_mpi", name);
    for (int k = 0; k < 2; k++) {
        snprintf(log, sizeof log, "%s.log", dirs[k]);
        int rc = run(log, "%s%s %s --set run.dir=%s/%s %s", k ? MPIRUN : "", TRAIN, cfg, tmp, dirs[k], sets);
        CHECK(rc == 0, "%s: the %s run exited %d (see %s/%s)", what, k ? "mpirun -np 2" : "single-process", rc, tmp,
              log);
    }
    char a[200], b[200], label[200];
    snprintf(a, sizeof a, "%s/checkpoints/epoch_0002", dirs[0]);
    snprintf(b, sizeof b, "%s/checkpoints/epoch_0002", dirs[1]);
    snprintf(label, sizeof label, "%s: 2 ranks vs 1 process", what);
    compare_weights(a, b, label);
}

/* name in tmp: [run], then [data] (its generated-data keys where procedural), then [model] (where
 * model) and [optim]. The BU-TD runs take a file without [model] and the multi-task one without the
 * generated-data keys: a key the run would not read is refused. */
static void write_config_file(const char *name, int procedural, int model) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    /* 96 training samples = 6 global batches of 16 = 2 ranks x 8; 40 test images do not divide
     * into the ranks' evaluation batches, so the last one is partial and rank 1's is empty. */
    fprintf(f, "[run]\ndevice = cpu\nepochs = 2\nlog_interval = 2\nthreads = 1\ncollective_timeout = 60\n"
               "[data]\nbatch_size = 16\nloader_threads = 1\naugment_flip = true\n");
    if (procedural)
        fprintf(f, "dataset = procedural\nprocedural_train = 96\nprocedural_test = 40\nprocedural_size = 8\n"
                   "procedural_classes = 3\n");
    if (model) fprintf(f, "[model]\narch = cnn\nchannels = 4,6\nhidden = 8\nbatchnorm = false\ndropout = 0\n");
    fprintf(f, "[optim]\noptimizer = sgd\nlr = 0.05\nmomentum = 0.9\nweight_decay = 0.0005\ngrad_clip_norm = 5\n");
    fclose(f);
}

static void write_config(void) {
    write_config_file("tiny.ini", 1, 1);
    write_config_file("butd.ini", 1, 0);
    write_config_file("butd_multi.ini", 0, 0);
    write_config_file("files.ini", 0, 1);
}

/* MNIST-named IDX files of n 28x28 images (labels 0..2) in dir, for the split prefix. */
static void write_idx(const char *dir, const char *prefix, int n) {
    char path[600];
    const unsigned char images[16] = {0, 0, 8, 3, n >> 24, n >> 16, n >> 8, n, 0, 0, 0, 28, 0, 0, 0, 28};
    const unsigned char labels[8] = {0, 0, 8, 1, n >> 24, n >> 16, n >> 8, n};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(images, 1, 16, f) == 16, "write %s", path);
    for (int i = 0; f && i < n * 28 * 28; i++) fputc((i * 7) & 255, f);
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    f = fopen(path, "wb");
    CHECK(f && fwrite(labels, 1, 8, f) == 8, "write %s", path);
    for (int i = 0; f && i < n; i++) fputc(i % 3, f);
    if (f) fclose(f);
}

static void driver(const char *self) {
    snprintf(tmp, sizeof tmp, "/tmp/bioflex_mpi_XXXXXX");
    if (!mkdtemp(tmp)) bf_test_skip("cannot make a temporary directory");
    write_config();
    char cfg[300], butd_cfg[300], multi_cfg[300], files_cfg[300];
    snprintf(cfg, sizeof cfg, "%s/tiny.ini", tmp);
    snprintf(butd_cfg, sizeof butd_cfg, "%s/butd.ini", tmp);
    snprintf(multi_cfg, sizeof multi_cfg, "%s/butd_multi.ini", tmp);
    snprintf(files_cfg, sizeof files_cfg, "%s/files.ini", tmp);

    int rc = run("single.log", "%s %s --set run.dir=%s/single", TRAIN, cfg, tmp);
    CHECK(rc == 0, "single-process run exited %d (see %s/single.log)", rc, tmp);
    rc = run("mpi.log", MPIRUN "%s %s --set run.dir=%s/mpi", TRAIN, cfg, tmp);
    CHECK(rc == 0, "mpirun -np 2 run exited %d (see %s/mpi.log)", rc, tmp);
    compare_weights("single/checkpoints/epoch_0002", "mpi/checkpoints/epoch_0002", "2 ranks vs 1 process");
    check_trained("single/checkpoints/epoch_0001", "single/checkpoints/epoch_0002");
    /* Rank 0 alone writes: one checkpoint line per epoch and as many metrics lines as one process. */
    CHECK(count_in_file("mpi.log", "checkpoint: ") == 2, "checkpoint lines: %d, want 2",
          count_in_file("mpi.log", "checkpoint: "));
    CHECK(count_in_file("mpi/metrics.jsonl", "\"step\"") == count_in_file("single/metrics.jsonl", "\"step\""),
          "metrics lines: %d with 2 ranks, %d with one", count_in_file("mpi/metrics.jsonl", "\"step\""),
          count_in_file("single/metrics.jsonl", "\"step\""));
    CHECK(count_in_file("mpi.log", "test accuracy:") == 1, "final result lines: %d, want 1 (rank 0 only)",
          count_in_file("mpi.log", "test accuracy:"));
    CHECK(count_in_file("mpi.log", "(40 images)") >= 1, "the evaluation of 2 ranks covers the 40 test images");
    /* Exposed communication: the 2 ranks time their gradient all-reduce, one process has none. */
    printf("comm_exposed_ms in (0, ms_per_step) in %d metrics lines of 2 ranks, absent in %d of one process\n",
           check_comm_exposed("mpi/metrics.jsonl", 1), check_comm_exposed("single/metrics.jsonl", 0));

    /* Random draws are keyed by the sample's place in the global batch or the split (bf_layer_draws):
     * a rate-coded LIF CNN with dropout draws on 2 ranks what one process draws for the same samples,
     * so it trains to the same weights, and its sharded evaluation scores what bioflex-eval does in
     * one process with evaluation batches of another size. */
    const char *drawn = "--set spiking.neuron=lif --set spiking.time_steps=2 --set spiking.threshold=0.3 "
                        "--set spiking.encoding=rate --set data.normalize=false --set model.dropout=0.3";
    single_and_two_ranks("drawn", cfg, drawn, "rate-coded LIF CNN with dropout");
    /* [data] micro_batches: one process takes its batch of 16 in 2 slices of 8, each rank its 8 in 2
     * of 4; the all-reduce waits for the slices' summed gradients, and the draws stay the batch's */
    single_and_two_ranks("micro", cfg, "--set data.micro_batches=2 --set model.dropout=0.3",
                         "micro_batches = 2 with dropout");
    check_trained("drawn_single/checkpoints/epoch_0001", "drawn_single/checkpoints/epoch_0002");
    rc = run("drawn_eval.log", "%s/bioflex-eval --checkpoint %s/drawn_mpi %s %s --set data.eval_batch_size=7",
             BIOFLEX_BINARY_DIR, tmp, cfg, drawn);
    CHECK(rc == 0, "bioflex-eval of the rate-coded run exited %d (see %s/drawn_eval.log)", rc, tmp);
    same_as_bioflex_eval("drawn_mpi.log", "drawn_eval.log", "rate-coded LIF CNN with dropout");

    /* BU-TD (butd_train.c, its own loop): Counter-Hebb with separate weights, grad_data averaged. */
    const char *butd = "--set butd.network=fc --set butd.hidden=16 --set butd.weights=separate "
                       "--set butd.learning=counter_hebb";
    single_and_two_ranks("butd", butd_cfg, butd, "BU-TD");
    check_trained("butd_single/checkpoints/epoch_0001", "butd_single/checkpoints/epoch_0002");
    CHECK(count_in_file("butd_mpi.log", "checkpoint: ") == 2, "BU-TD checkpoint lines: %d, want 2 (rank 0 only)",
          count_in_file("butd_mpi.log", "checkpoint: "));
    same_final_eval("butd_single.log", "butd_mpi.log", "BU-TD");
    check_comm_exposed("butd_mpi/metrics.jsonl", 1);
    check_comm_exposed("butd_single/metrics.jsonl", 0);
    /* BU-TD ResNet-18 with batch-norm (BU and TD copies), backprop, one epoch: with [run] sync_bn the
     * 2 ranks normalise over the global batch as one process does; with local statistics they do
     * not. This net is chaotic: rounding differences grow by orders of magnitude with every step,
     * and by how much depends on the CPU's BLAS kernels (after 6 steps the synced ranks ended 4.8e-7
     * from one process on one machine and 2.1e-5 on another). So it is compared after 3 steps (48
     * samples, one epoch) on max |diff|: sync 1.8e-7, local 0.1. */
    const char *bn = "--set butd.network=resnet18 --set butd.batch_norm=true --set butd.learning=backprop "
                     "--set optim.lr=0.002 --set run.epochs=1 --set data.procedural_train=48";
    rc = run("butd_bn_single.log", "%s %s --set run.dir=%s/butd_bn_single %s", TRAIN, butd_cfg, tmp, bn);
    CHECK(rc == 0, "single-process BU-TD batch-norm run exited %d (see %s/butd_bn_single.log)", rc, tmp);
    rc = run("butd_bn_sync.log", MPIRUN "%s %s --set run.dir=%s/butd_bn_sync --set run.sync_bn=true %s", TRAIN, butd_cfg,
             tmp, bn);
    CHECK(rc == 0, "mpirun BU-TD sync_bn run exited %d (see %s/butd_bn_sync.log)", rc, tmp);
    rc = run("butd_bn_local.log", MPIRUN "%s %s --set run.dir=%s/butd_bn_local %s", TRAIN, butd_cfg, tmp, bn);
    CHECK(rc == 0, "mpirun BU-TD local batch-norm run exited %d", rc);
    double synced = max_abs_diff("butd_bn_single/checkpoints/epoch_0001", "butd_bn_sync/checkpoints/epoch_0001");
    double local = max_abs_diff("butd_bn_single/checkpoints/epoch_0001", "butd_bn_local/checkpoints/epoch_0001");
    printf("BU-TD batch-norm, 2 ranks vs 1 process after one epoch: max |diff| %.3g with sync_bn, %.3g without\n",
           synced, local);
    CHECK(synced < 1e-4, "BU-TD sync_bn: 2 ranks %g away from one process", synced);
    CHECK(local > 1e-3, "BU-TD local batch-norm statistics on 2 ranks should differ from one process's (%g)", local);

    /* Guided, on Multi-Fashion-MNIST (part of it): the per-task evaluation is sharded and summed. */
    const char *guided = "--set data.dataset=multi_fashion_mnist --set data.train_limit=96 --set data.test_limit=40 "
                         "--set butd.network=simple --set butd.conv_channels=4,4 --set butd.hidden=8 "
                         "--set butd.task_embedding=6 --set butd.guided=true --set butd.learning=counter_hebb";
    single_and_two_ranks("guided", multi_cfg, guided, "guided BU-TD");
    same_final_eval("guided_single.log", "guided_mpi.log", "guided BU-TD");

    /* Batch-norm: with [run] sync_bn the 2 ranks normalise over the global batch, as one process
     * does, so the weights and running statistics agree; with local statistics they must not. */
    rc = run("bn_single.log", "%s %s --set run.dir=%s/bn_single --set model.batchnorm=true", TRAIN, cfg, tmp);
    CHECK(rc == 0, "single-process batch-norm run exited %d", rc);
    rc = run("bn_sync.log", MPIRUN "%s %s --set run.dir=%s/bn_sync --set model.batchnorm=true --set run.sync_bn=true",
             TRAIN, cfg, tmp);
    CHECK(rc == 0, "mpirun sync_bn run exited %d (see %s/bn_sync.log)", rc, tmp);
    compare_weights("bn_single/checkpoints/epoch_0002", "bn_sync/checkpoints/epoch_0002", "sync_bn: 2 ranks vs 1 process");
    rc = run("bn_local.log", MPIRUN "%s %s --set run.dir=%s/bn_local --set model.batchnorm=true", TRAIN, cfg, tmp);
    CHECK(rc == 0, "mpirun local batch-norm run exited %d", rc);
    CHECK(max_abs_diff("bn_single/checkpoints/epoch_0002", "bn_local/checkpoints/epoch_0002") > 1e-5,
          "local batch-norm statistics on 2 ranks should differ from one process's");

    /* A flex layer's logits batch-norm (mask joint, no other batch-norm) follows sync_bn too. */
    const char *flex = "--set model.flex=true --set model.flex_joint=mask --set model.flex_logits_bn=true";
    rc = run("flexbn_single.log", "%s %s --set run.dir=%s/flexbn_single %s", TRAIN, cfg, tmp, flex);
    CHECK(rc == 0, "single-process flex logits batch-norm run exited %d (see %s/flexbn_single.log)", rc, tmp);
    rc = run("flexbn_sync.log", MPIRUN "%s %s --set run.dir=%s/flexbn_sync --set run.sync_bn=true %s", TRAIN, cfg, tmp,
             flex);
    CHECK(rc == 0, "mpirun flex logits sync_bn run exited %d (see %s/flexbn_sync.log)", rc, tmp);
    compare_weights("flexbn_single/checkpoints/epoch_0002", "flexbn_sync/checkpoints/epoch_0002",
                    "flex logits sync_bn: 2 ranks vs 1 process");
    rc = run("flexbn_local.log", MPIRUN "%s %s --set run.dir=%s/flexbn_local %s", TRAIN, cfg, tmp, flex);
    CHECK(rc == 0, "mpirun flex logits local batch-norm run exited %d", rc);
    CHECK(max_abs_diff("flexbn_single/checkpoints/epoch_0002", "flexbn_local/checkpoints/epoch_0002") > 1e-5,
          "local flex logits batch-norm statistics on 2 ranks should differ from one process's");
    /* Channel-wise max flex layers with batch-norms: one process fuses them both ways (the flex forward
     * takes the statistics, the flex route applies the batch-norm's dx); under sync_bn the 2 ranks
     * take the synchronised statistics and backward apart from the flex layers: the same training. */
    const char *flex_max = "--set model.flex=true --set model.flex_joint=channelwise_max --set model.batchnorm=true";
    rc = run("flexmax_single.log", "%s %s --set run.dir=%s/flexmax_single %s", TRAIN, cfg, tmp, flex_max);
    CHECK(rc == 0, "single-process flex + batch-norm run exited %d (see %s/flexmax_single.log)", rc, tmp);
    rc = run("flexmax_sync.log", MPIRUN "%s %s --set run.dir=%s/flexmax_sync --set run.sync_bn=true %s", TRAIN, cfg,
             tmp, flex_max);
    CHECK(rc == 0, "mpirun flex + batch-norm sync_bn run exited %d (see %s/flexmax_sync.log)", rc, tmp);
    compare_weights("flexmax_single/checkpoints/epoch_0002", "flexmax_sync/checkpoints/epoch_0002",
                    "channel-wise max flex + batch-norm, sync_bn: 2 ranks vs 1 process");
    /* the conv ratio logged is the whole global batch's (every rank's share averaged), as one process's */
    const double ratio_one = last_value("flexmax_single/metrics.jsonl", "mean_conv_ratio"),
                 ratio_two = last_value("flexmax_sync/metrics.jsonl", "mean_conv_ratio");
    CHECK(ratio_one > 0 && fabs(ratio_one - ratio_two) < 1e-4, "mean conv ratio: %.6f with 2 ranks, %.6f in one process",
          ratio_two, ratio_one);
    /* The 2 ranks' (sharded) final evaluation uses rank 0's running statistics, the checkpoint's:
     * it scores exactly what bioflex-eval scores from that checkpoint in one process. */
    rc = run("bn_local_eval.log", "%s/bioflex-eval --checkpoint %s/bn_local %s --set model.batchnorm=true", BIOFLEX_BINARY_DIR,
             tmp, cfg);
    CHECK(rc == 0, "bioflex-eval of the batch-norm run exited %d (see %s/bn_local_eval.log)", rc, tmp);
    same_as_bioflex_eval("bn_local.log", "bn_local_eval.log", "batch-norm, local statistics");

    /* Resume with another world size: 1 epoch on 2 ranks, the second in one process. */
    rc = run("mpi1.log", MPIRUN "%s %s --set run.dir=%s/half --set run.epochs=1", TRAIN, cfg, tmp);
    CHECK(rc == 0, "1-epoch mpirun run exited %d", rc);
    rc = run("resume.log", "%s %s --set run.dir=%s/half --resume %s/half", TRAIN, cfg, tmp, tmp);
    CHECK(rc == 0, "resume in one process exited %d (see %s/resume.log)", rc, tmp);
    compare_weights("single/checkpoints/epoch_0002", "half/checkpoints/epoch_0002", "2 ranks then resumed on 1");

    /* SIGTERM to rank 1 only (a shell that signals itself, then execs bioflex-train): the ranks agree
     * at a log interval, rank 0 writes the checkpoint, both exit 128 + 15. The signal goes once rank
     * 0 has logged a step (both ranks are training then, their handlers in place); the run is long
     * (no evaluation or checkpoint per epoch), so it always lands during training. */
    const char *endless = "--set run.epochs=100000 --set run.eval_every=0 --set run.checkpoint_every=0";
    rc = run("stop.log", "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 1 %s %s "
             "--set run.dir=%s/stop %s : -np 1 sh -c '(for i in $(seq 600); do [ -s %s/stop/metrics.jsonl ] && break; "
             "sleep 0.1; done; kill -TERM $$) & exec %s %s --set run.dir=%s/stop %s'",
             TRAIN, cfg, tmp, endless, tmp, TRAIN, cfg, tmp, endless);
    long stop_step = -1;
    int stop_epoch = -1;
    char path[600], line[1024], latest[64] = "";
    snprintf(path, sizeof path, "%s/stop.log", tmp);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "stopped on request after step ");
        if (p) sscanf(p, "stopped on request after step %ld (epoch %d,", &stop_step, &stop_epoch);
    }
    if (f) fclose(f);
    snprintf(path, sizeof path, "%s/stop/checkpoints/latest", tmp);
    if ((f = fopen(path, "r"))) {
        if (!fgets(latest, sizeof latest, f)) latest[0] = 0;
        fclose(f);
    }
    latest[strcspn(latest, "\n")] = 0;
    char want[64];
    snprintf(want, sizeof want, "step_%09ld", stop_step);
    CHECK(rc == 128 + 15, "SIGTERM to rank 1: mpirun exited %d, want 143 (see %s/stop.log)", rc, tmp);
    CHECK(count_in_file("stop.log", "stopped on request") == 1 && stop_step > 0 && stop_step % 2 == 0,
          "one stop line at a log interval (every 2 steps): step %ld", stop_step);
    CHECK(strcmp(latest, want) == 0, "latest names the stop checkpoint %s (got '%s')", want, latest);
    if (stop_step > 0 && stop_epoch > 0) { /* the constant schedule does not depend on run.epochs */
        rc = run("stop_resume.log", MPIRUN "%s %s --set run.dir=%s/stop --resume %s/stop --set run.epochs=%d "
                 "--set run.eval_every=0 --set run.checkpoint_every=0", TRAIN, cfg, tmp, tmp, stop_epoch);
        CHECK(rc == 0, "resuming the stopped run exited %d (see %s/stop_resume.log)", rc, tmp);
        rc = run("stop_ref.log", MPIRUN "%s %s --set run.dir=%s/stop_ref --set run.epochs=%d --set run.eval_every=0 "
                 "--set run.checkpoint_every=0", TRAIN, cfg, tmp, stop_epoch);
        CHECK(rc == 0, "the uninterrupted reference run exited %d", rc);
        char a[64], b[64];
        snprintf(a, sizeof a, "stop_ref/checkpoints/epoch_%04d", stop_epoch);
        snprintf(b, sizeof b, "stop/checkpoints/epoch_%04d", stop_epoch);
        compare_weights(a, b, "stopped by SIGTERM to rank 1 at a log interval, resumed");
        printf("SIGTERM to rank 1: both ranks stopped after step %ld (epoch %d)\n", stop_step, stop_epoch);
    }

    /* SIGUSR1 to mpirun itself (the way README advises to stop an mpirun job): Open MPI forwards it
     * to every rank at once and keeps reading their output until they exit, so the ranks agree on a
     * step, write its checkpoint and exit with 128 + SIGUSR1. (SIGTERM to mpirun reaches the ranks
     * only after odls_base_sigkill_timeout seconds of not reading their output, then SIGKILL.) The
     * signal goes to mpirun alone, once, not through timeout(1), which also signals its group. */
    rc = run("stop_mpirun.log", "timeout 150 sh -c '" BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 2 "
             "%s %s --set run.dir=%s/stop_mpirun %s --set run.log_interval=1000 --set data.procedural_train=16000 & "
             "m=$!; for i in $(seq 600); do [ -s %s/stop_mpirun/metrics.jsonl ] && break; sleep 0.1; done; sleep 0.5; "
             "kill -USR1 $m; wait $m'", TRAIN, cfg, tmp, endless, tmp);
    char mpirun_latest[64] = "";
    snprintf(path, sizeof path, "%s/stop_mpirun/checkpoints/latest", tmp);
    if ((f = fopen(path, "r"))) {
        if (!fgets(mpirun_latest, sizeof mpirun_latest, f)) mpirun_latest[0] = 0;
        fclose(f);
    }
    CHECK(strncmp(mpirun_latest, "step_", 5) == 0 && count_in_file("stop_mpirun.log", "stopped on request") == 1,
          "SIGUSR1 to mpirun: latest names a step checkpoint and rank 0 says it stopped (got '%s', mpirun exited "
          "%d; see %s/stop_mpirun.log)", mpirun_latest, rc, tmp);
    if (strncmp(mpirun_latest, "step_", 5) == 0) { /* the stopped run goes on from its checkpoint */
        rc = run("stop_mpirun_resume.log", MPIRUN "%s %s --set run.dir=%s/stop_mpirun --resume %s/stop_mpirun "
                 "--set run.log_interval=1000 --set data.procedural_train=16000 --set run.epochs=%ld --set run.eval_every=0 "
                 "--set run.checkpoint_every=0", TRAIN, cfg, tmp, tmp, atol(mpirun_latest + 5) / 1000 + 1);
        CHECK(rc == 0 && count_in_file("stop_mpirun_resume.log", "resum") >= 1,
              "resuming the run stopped through mpirun exited %d (see %s/stop_mpirun_resume.log)", rc, tmp);
    }

    /* Configs that differ between ranks (MPMD: rank 0 gets another learning rate). */
    rc = run("mismatch.log", "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 1 %s %s "
             "--set run.dir=%s/mm --set optim.lr=0.1 : -np 1 %s %s --set run.dir=%s/mm", TRAIN, cfg, tmp, TRAIN, cfg, tmp);
    CHECK(rc == 2 && count_in_file("mismatch.log", "differs from rank 0") >= 1,
          "mismatched configs: exit %d, want 2 and an error naming the rank that differs", rc);
    CHECK(count_in_file("mismatch.log", "rank 0 has \"[optim] lr = 0.1\"") >= 1,
          "mismatched configs: no error names rank 0's line \"[optim] lr = 0.1\" (see %s/mismatch.log)", tmp);
    /* The same config named by two paths (the printed config's header comment differs): one run. */
    rc = run("spelling.log", "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 1 %s %s "
             "--set run.dir=%s/spell --set run.epochs=1 : -np 1 -wdir %s %s tiny.ini --set run.dir=%s/spell "
             "--set run.epochs=1", TRAIN, cfg, tmp, tmp, TRAIN, tmp);
    CHECK(rc == 0, "one config as an absolute and a relative path on the two ranks: exit %d (see %s/spelling.log)",
          rc, tmp);
    /* Ranks that resume from different checkpoints (a stale checkpoints/latest on one node) stop at
     * start, naming both positions. */
    rc = run("resume_mixed.log", "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe -np 1 %s %s "
             "--set run.dir=%s/rmix --set run.epochs=3 --resume %s/single/checkpoints/epoch_0001 : -np 1 %s %s "
             "--set run.dir=%s/rmix --set run.epochs=3 --resume %s/single/checkpoints/epoch_0002",
             TRAIN, cfg, tmp, tmp, TRAIN, cfg, tmp, tmp);
    CHECK(rc == 2 && count_in_file("resume_mixed.log", "training position differs from rank 0's") >= 1 &&
              count_in_file("resume_mixed.log", "rank 1 has \"resumed at epoch 2,") >= 1,
          "ranks resumed at epochs 1 and 2: exit %d, want 2 and an error naming rank 1's position (see %s/resume_mixed.log)",
          rc, tmp);
    rc = run("indivisible.log", MPIRUN "%s %s --set run.dir=%s/ind --set data.batch_size=15", TRAIN, cfg, tmp);
    CHECK(rc == 2 && count_in_file("indivisible.log", "must be divisible by the 2") >= 1,
          "batch 15 on 2 ranks: exit %d, want 2 and a divisibility error", rc);
    rc = run("few.log", MPIRUN "%s %s --set run.dir=%s/few --set data.batch_size=128", TRAIN, cfg, tmp);
    CHECK(rc == 2 && count_in_file("few.log", "too few samples per rank") >= 1,
          "batch 128 over 96 samples: exit %d, want 2 and a too-few-samples error", rc);

    /* Ranks that read different data under the same config (a relative [data] path from two working
     * directories) stop at start, before their collectives fall out of step. */
    for (int r = 0; r < 2; r++) {
        char dir[400];
        snprintf(dir, sizeof dir, "%s/wd%d/idx", tmp, r);
        char cmd[500];
        snprintf(cmd, sizeof cmd, "mkdir -p %s", dir);
        CHECK(system(cmd) == 0, "mkdir %s", dir);
        write_idx(dir, "train", r == 0 ? 96 : 112);
        write_idx(dir, "t10k", 16);
    }
    rc = run("other_data.log", "timeout 120 " BIOFLEX_MPIEXEC " --allow-run-as-root --oversubscribe "
             "-np 1 -wdir %s/wd0 %s %s --set run.dir=%s/od --set data.dataset=mnist --set data.path=idx : "
             "-np 1 -wdir %s/wd1 %s %s --set run.dir=%s/od --set data.dataset=mnist --set data.path=idx",
             tmp, TRAIN, files_cfg, tmp, tmp, TRAIN, files_cfg, tmp);
    CHECK(rc == 2 && count_in_file("other_data.log", "rank 1's dataset (sample counts") >= 1,
          "different data files on the two ranks: exit %d, want 2 and an error naming rank 1's dataset", rc);
    /* srun without an MPI plugin: each task is an MPI world of one; it must not train alone. */
    rc = run("no_pmi.log", "SLURM_PROCID=0 SLURM_NTASKS=2 timeout 120 %s %s --set run.dir=%s/no_pmi", TRAIN, cfg, tmp);
    CHECK(rc == 2 && count_in_file("no_pmi.log", "the launcher started 2 ranks") >= 1 &&
              count_in_file("no_pmi.log", "MPI sees a world of 1") >= 1,
          "SLURM_NTASKS=2 without mpirun or a PMI: exit %d, want 2 and the launcher's world against MPI's", rc);
    /* 100 samples in global batches of 16: each epoch leaves 4 out, and the log says so. */
    rc = run("left_out.log", MPIRUN "%s %s --set run.dir=%s/left_out --set data.procedural_train=100 --set run.epochs=1",
             TRAIN, cfg, tmp);
    CHECK(rc == 0 && count_in_file("left_out.log", "leaves out the last 4 of its permutation") == 1,
          "100 samples over 2 ranks x 8: exit %d, want one note of the 4 samples left out", rc);

    /* A rank that hangs: the other reports the stalled collective within the 2 s timeout. */
    double t0 = now_s();
    rc = run("hang.log", MPIRUN "%s --hang-rank", self);
    double hang_s = now_s() - t0;
    CHECK(rc != 0 && rc != 124, "hung rank: mpirun exited %d, want a failure before the 120 s guard", rc);
    CHECK(count_in_file("hang.log", "did not complete within 2 s") >= 1, "hung rank: no timeout message");
    CHECK(hang_s < 30, "hung rank: the job took %.1f s to stop", hang_s);
    /* A rank that dies: the job ends (mpirun or the timeout stops rank 0). */
    t0 = now_s();
    rc = run("die.log", MPIRUN "%s --die-rank", self);
    double die_s = now_s() - t0;
    CHECK(rc != 0 && rc != 124, "dead rank: mpirun exited %d, want a failure before the 120 s guard", rc);
    CHECK(die_s < 30, "dead rank: the job took %.1f s to stop", die_s);
    printf("hung rank stopped the job in %.1f s, dead rank in %.1f s\n", hang_s, die_s);
}

/* Under mpirun: rank 1 hangs or dies, rank 0 all-reduces with a 2 s timeout. */
static int faulty_rank(int die) {
    bf_comm *c = NULL;
    if (bf_comm_create_world(2.0, &c) != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return 1;
    }
    float x[4] = {1, 2, 3, 4};
    bf_status s = bf_comm_allreduce_float(c, x, 4, BF_REDUCE_SUM); /* a healthy first collective */
    if (s == BF_OK && c->rank == 1) {
        if (die) _exit(3);
        sleep(100);
    }
    if (s == BF_OK) s = bf_comm_allreduce_float(c, x, 4, BF_REDUCE_SUM);
    bf_comm_destroy(c, s != BF_OK); /* on failure: prints the message and aborts the job */
    return s == BF_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--hang-rank") == 0) return faulty_rank(0);
    if (argc > 1 && strcmp(argv[1], "--die-rank") == 0) return faulty_rank(1);
    if (!bf_comm_mpi_built()) bf_test_skip("bioflex was built without MPI");
    driver(argv[0]);
    bf_test_remove_dir_if_passed(tmp); /* some 400 MB of runs and logs */
    return bf_test_finish();
}

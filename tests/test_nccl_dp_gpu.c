/* test_nccl_dp_gpu.c - the NCCL data-parallel path with one rank gives the plain path's results
 * (issue 7, point 5). Needs a GPU and a build with NCCL; exits 77 (skipped) otherwise.
 *   - a one-rank NCCL communicator: all-reduce (sum, average, device doubles), broadcast and the
 *     host-count all-reduce leave the values as they are;
 *   - a few epochs of a tiny CNN trained by bf_train (plain) and by bf_train with [run] force_nccl
 *     (bf_train_gpus(1): NCCL buckets launched from the backward pass, stream hand-offs) end with the
 *     same weights and accuracy, also with a wide hidden layer and 1 MiB buckets, so that a bucket
 *     is launched while the backward pass still runs;
 *   - the NCCL run logs comm_exposed_ms (timing events around the compute stream's wait for the
 *     buckets) in every metrics line, within [0, ms_per_step); the plain run logs none;
 *   - the same for a BU-TD network (its own training loop and one timed gradient all-reduce per step).
 * With two GPUs (or the kernel emulator's two devices and NCCL, emu_test_nccl_dp_gpu_two), --gpus 2
 * (bf_train_gpus: one thread per GPU, communicators made in one group, buckets, sharded evaluation)
 * with the same global batch as one process:
 *   - a CNN with dropout, without batch-norm, ends at one process's weights (1e-6) and test score, and
 *     rank 0 alone writes the metrics lines;
 *   - so does it trained in slices ([data] micro_batches = 2: the all-reduce after their sum);
 *   - a run resumed with the other GPU count (2 -> 1 and 1 -> 2 after the first epoch) ends there too,
 *     and one stopped on request inside an epoch and resumed ends bit for bit where it would have;
 *   - with batch-norm, [run] sync_bn = true ends there as well, local statistics do not;
 *   - a BU-TD network (Counter-Hebb, separate weights) ends at one process's weights, logging
 *     comm_exposed_ms;
 *   - rank 0 failing alone (its first checkpoint) while rank 1 waits in a collective ends the run
 *     at once with rank 0's error (bf_comm_nccl_fail), not at the collective timeout. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bioflex/comm.h"
#include "bioflex/image.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "data_parallel.h"
#include "comm_exposed_check.h"
#include "testutil.h"

static void check_one_rank_collectives(bf_backend *b, bf_comm *c) {
    enum { N = 1000 };
    float host[N], back[N];
    bf_test_fill_uniform(host, N, -1, 1, 7);
    float *dev = bf_test_upload(b, host, N);
    CHECK(dev != NULL, "upload");
    if (!dev) return;
    void *stream = bf_comm_nccl_stream(c);
    CHECK_OK(bf_cuda_stream_handoff(b, stream, 1));
    CHECK_OK(bf_comm_nccl_allreduce_async(c, dev, N, BF_REDUCE_AVG));
    CHECK_OK(bf_comm_nccl_allreduce_async(c, dev, N, BF_REDUCE_SUM));
    CHECK_OK(bf_cuda_stream_handoff(b, stream, 0));
    CHECK_OK(bf_comm_nccl_wait(c, "test all-reduce"));
    CHECK_OK(bf_to_host(b, back, dev, sizeof back));
    CHECK(memcmp(host, back, sizeof host) == 0, "one-rank all-reduce changed the values");
    /* device doubles (sync_bn's per-channel sums), ordered by the same stream hand-offs */
    double sums[5] = {1.25, -3, 1e300, 0, 42}, sums_back[5];
    double *dsums = NULL;
    CHECK_OK(bf_alloc(b, sizeof sums, (void **)&dsums));
    if (dsums) {
        CHECK_OK(bf_to_device(b, dsums, sums, sizeof sums));
        CHECK_OK(bf_cuda_stream_handoff(b, stream, 1));
        CHECK_OK(bf_comm_nccl_allreduce_double_async(c, dsums, 5));
        CHECK_OK(bf_cuda_stream_handoff(b, stream, 0));
        CHECK_OK(bf_comm_nccl_wait(c, "test all-reduce of doubles"));
        CHECK_OK(bf_to_host(b, sums_back, dsums, sizeof sums_back));
        CHECK(memcmp(sums, sums_back, sizeof sums) == 0, "one-rank all-reduce of device doubles changed the values");
        bf_free(b, dsums);
    }
    double counts[3] = {1.5, 2, 40};
    CHECK_OK(c->impl->allreduce_double(c, counts, 3));
    CHECK(counts[0] == 1.5 && counts[1] == 2 && counts[2] == 40, "one-rank count all-reduce: %g %g %g", counts[0],
          counts[1], counts[2]);
    uint64_t v = 0x1234567890abcdefull;
    CHECK_OK(c->impl->broadcast(c, &v, sizeof v, 0));
    CHECK(v == 0x1234567890abcdefull, "one-rank broadcast of a host value");
    bf_free(b, dev);
}

/* The weights of two safetensors files, plain run vs NCCL run, to 1e-6 relative. */
static void compare_weights(const char *pa, const char *pb) {
    bf_st_file *a = NULL, *b = NULL;
    CHECK_OK(bf_safetensors_read(pa, &a));
    CHECK_OK(bf_safetensors_read(pb, &b));
    size_t floats = 0;
    for (int i = 0; a && b && i < bf_safetensors_count(a); i++) {
        const bf_st_tensor *ta = bf_safetensors_at(a, i), *tb = bf_safetensors_find(b, ta->name);
        CHECK(tb && tb->nbytes == ta->nbytes, "tensor %s missing or resized", ta->name);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != BF_DTYPE_F32) continue;
        size_t n = ta->nbytes / sizeof(float), at = 0;
        double v = bf_test_max_violation(ta->data, tb->data, n, 1e-7, 1e-6, &at);
        CHECK(v <= 1, "%s[%zu]: plain %.9g vs NCCL %.9g", ta->name, at, ((const float *)ta->data)[at],
              ((const float *)tb->data)[at]);
        floats += n;
    }
    CHECK(floats > 100, "compared %zu weights", floats);
    bf_safetensors_close(a);
    bf_safetensors_close(b);
}

/* comm_exposed_ms in run_dir/metrics.jsonl (comm_exposed_check.h); the buckets may be hidden
 * entirely behind the backward pass, so 0 is allowed. */
static void check_comm_exposed(const char *run_dir, int want) {
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    check_comm_exposed_file(path, want, 1);
}

/* One run of cfg into tmp/name (resumed from tmp/resume_from when not NULL; asked to stop when
 * *stop is set); *model gets its last checkpoint's weights file. */
static bf_train_result run_stopping(bf_config *cfg, const char *tmp, const char *name, const char *resume_from,
                                    const atomic_int *stop, char model[700]) {
    char resume[600] = "";
    if (resume_from) snprintf(resume, sizeof resume, "%s/%s", tmp, resume_from);
    bf_train_options opt = {.quiet = 1, .log = stderr, .resume = resume_from ? resume : NULL, .stop = stop};
    bf_train_result res;
    memset(&res, 0, sizeof res);
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s/%s", tmp, name);
    CHECK_OK(bf_train(cfg, &opt, &res));
    snprintf(model, 700, "%s/model.safetensors", res.checkpoint);
    return res;
}

static bf_train_result run_into(bf_config *cfg, const char *tmp, const char *name, const char *resume_from,
                                char model[700]) {
    return run_stopping(cfg, tmp, name, resume_from, NULL, model);
}

/* How many lines of tmp/name/metrics.jsonl hold `needle`. */
static int count_lines(const char *tmp, const char *name, const char *needle) {
    char path[700], line[8192];
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", tmp, name);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) n += strstr(line, needle) != NULL;
    if (f) fclose(f);
    return f ? n : -1;
}

/* --gpus 2 against one process with the same global batch (the file comment's list). */
static void check_two_gpus(const char *tmp, const char *const *sets, size_t num_sets) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    for (size_t i = 0; i < num_sets; i++) CHECK_OK(bf_config_set(&cfg, sets[i]));
    CHECK_OK(bf_config_set(&cfg, "model.batchnorm=false")); /* the ranks' passes then do not depend on the split */
    CHECK_OK(bf_config_set(&cfg, "model.dropout=0.3")); /* drawn per sample: the ranks draw what one process draws */
    char one[700], two[700], part[700], resumed[700];
    bf_train_result r1 = run_into(&cfg, tmp, "one", NULL, one);
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    bf_train_result r2 = run_into(&cfg, tmp, "two", NULL, two);
    CHECK(r1.steps_done == 16 && r2.steps_done == 16, "--gpus 2: steps %ld (one process %ld)", r2.steps_done,
          r1.steps_done);
    CHECK_CLOSE(r1.final_eval.top1, r2.final_eval.top1, 1e-9, 0, "--gpus 2: test top-1");
    CHECK_CLOSE(r1.final_eval.loss, r2.final_eval.loss, 1e-6, 1e-5, "--gpus 2: test loss");
    CHECK(r1.final_eval.samples == 64 && r2.final_eval.samples == 64, "--gpus 2: evaluated %d images (one process "
          "%d), want the whole test split once", r2.final_eval.samples, r1.final_eval.samples);
    compare_weights(one, two);
    const int lines1 = count_lines(tmp, "one", "\"type\":\"train\""), lines2 = count_lines(tmp, "two", "\"type\":\"train\"");
    CHECK(lines1 > 0 && lines1 == lines2, "--gpus 2 wrote %d train metrics lines, one process %d", lines2, lines1);
    snprintf(part, sizeof part, "%s/two", tmp);
    check_comm_exposed(part, 1);
    /* [data] micro_batches = 2: each rank takes its batch in 2 slices, the buckets all-reduced once
     * after their sum (no bucket from the slices' backward passes) */
    CHECK_OK(bf_config_set(&cfg, "data.micro_batches=2"));
    run_into(&cfg, tmp, "two_sliced", NULL, part);
    compare_weights(one, part);
    CHECK_OK(bf_config_set(&cfg, "data.micro_batches=1"));
    snprintf(part, sizeof part, "%s/two", tmp);

    /* a stop request (bioflex-train's signal), seen by the ranks together at the first log interval
     * (step 3 of 8), then resumed: bit for bit the run above */
    atomic_int stop = 1;
    bf_train_result stopped = run_stopping(&cfg, tmp, "stopped", NULL, &stop, part);
    CHECK(stopped.interrupted && stopped.steps_done == 3, "--gpus 2 asked to stop: interrupted %d after %ld steps, "
          "want the first log interval's 3", stopped.interrupted, stopped.steps_done);
    run_into(&cfg, tmp, "stopped", "stopped", resumed);
    compare_weights(two, resumed);
    CHECK(bf_test_weights_max_abs_diff(two, resumed) == 0, "--gpus 2 stopped and resumed: not bit for bit the "
          "uninterrupted run");

    /* resumed with the other GPU count after epoch 1 (the checkpoint of the 2 -> run above; then 1 -> 2) */
    CHECK_OK(bf_config_set(&cfg, "run.gpus=1"));
    run_into(&cfg, tmp, "two_then_one", "two/checkpoints/epoch_0001", resumed);
    compare_weights(one, resumed);
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    run_into(&cfg, tmp, "one_then_two", "one/checkpoints/epoch_0001", resumed);
    compare_weights(one, resumed);

    /* batch-norm: the same global statistics with sync_bn; the ranks' own 16 images without */
    CHECK_OK(bf_config_set(&cfg, "model.batchnorm=true"));
    CHECK_OK(bf_config_set(&cfg, "run.gpus=1"));
    run_into(&cfg, tmp, "bn_one", NULL, one);
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    CHECK_OK(bf_config_set(&cfg, "run.sync_bn=true"));
    run_into(&cfg, tmp, "bn_sync", NULL, two);
    compare_weights(one, two);
    CHECK_OK(bf_config_set(&cfg, "run.sync_bn=false"));
    run_into(&cfg, tmp, "bn_local", NULL, part);
    const double local = bf_test_weights_max_abs_diff(one, part);
    CHECK(local > 1e-4, "--gpus 2 with local batch-norm statistics moved the weights only %g from one process's", local);

    /* JPEG files (4 of them undecodable): each rank's loader skips those in its shard, and the
     * metrics count all of them, as one process does */
    char jpegs[600];
    snprintf(jpegs, sizeof jpegs, "%s/jpegs", tmp);
    bf_jpeg_synth_options synth = {.layout = BF_SYNTH_IMAGEFOLDER, .classes = 4, .train_per_class = 6,
                                   .val_per_class = 2, .width = 32, .height = 24, .quality = 90, .edge_cases = 1,
                                   .seed = 3};
    CHECK_OK(bf_jpeg_synth_tree(jpegs, &synth));
    bf_config_defaults(&cfg);
    for (size_t i = 0; i < num_sets; i++)
        if (strncmp(sets[i], "data.", 5) != 0) CHECK_OK(bf_config_set(&cfg, sets[i]));
    char path_set[700];
    snprintf(path_set, sizeof path_set, "data.path=%s", jpegs);
    const char *jpeg_sets[] = {"data.dataset=imagefolder", path_set, "data.image_size=16", "data.batch_size=8",
                               "run.epochs=1", "model.num_classes=4"};
    for (size_t i = 0; i < sizeof jpeg_sets / sizeof jpeg_sets[0]; i++) CHECK_OK(bf_config_set(&cfg, jpeg_sets[i]));
    run_into(&cfg, tmp, "jpeg_one", NULL, one); /* 24 + 8 edge-case files: 4 whole global batches */
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    run_into(&cfg, tmp, "jpeg_two", NULL, two);
    char metrics[2][700];
    snprintf(metrics[0], sizeof metrics[0], "%s/jpeg_one/metrics.jsonl", tmp);
    snprintf(metrics[1], sizeof metrics[1], "%s/jpeg_two/metrics.jsonl", tmp);
    /* a skip counts each time (a replacement drawn for a bad file may be bad too) */
    const double skipped_one = bf_test_last_json_number(metrics[0], "skipped_images"),
                 skipped_two = bf_test_last_json_number(metrics[1], "skipped_images");
    CHECK(skipped_one >= BF_SYNTH_BAD_FILES && skipped_two == skipped_one, "skipped_images: %g with --gpus 2, %g in "
          "one process (the same files, at least the %d undecodable ones)", skipped_two, skipped_one, BF_SYNTH_BAD_FILES);

    /* BU-TD: its own loop, bf_dp_average_floats */
    bf_config_defaults(&cfg);
    for (size_t i = 0; i < num_sets; i++)
        if (strncmp(sets[i], "model.", 6) != 0) CHECK_OK(bf_config_set(&cfg, sets[i]));
    const char *butd[] = {"butd.network=fc", "butd.hidden=16", "butd.weights=separate", "butd.learning=counter_hebb"};
    for (size_t i = 0; i < sizeof butd / sizeof butd[0]; i++) CHECK_OK(bf_config_set(&cfg, butd[i]));
    bf_train_result b1 = run_into(&cfg, tmp, "butd_one", NULL, one);
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    bf_train_result b2 = run_into(&cfg, tmp, "butd_two", NULL, two);
    CHECK_CLOSE(b1.final_eval.top1, b2.final_eval.top1, 1e-9, 0, "BU-TD --gpus 2: test accuracy");
    compare_weights(b1.checkpoint, b2.checkpoint);
    snprintf(two, sizeof two, "%s/butd_two", tmp);
    check_comm_exposed(two, 1);

    /* Rank 0 alone fails (its first checkpoint: a file stands where the checkpoints directory goes)
     * while rank 1 waits for it in the checkpoint's barrier. Rank 1 stops at once (told by
     * bf_comm_nccl_fail), not after the collective timeout of an hour (the test's own timeout is
     * shorter), and the run reports rank 0's error. */
    CHECK_OK(bf_config_set(&cfg, "run.collective_timeout=3600"));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/rank0_fails", tmp);
    CHECK(mkdir(cfg.run.dir, 0755) == 0, "mkdir %s", cfg.run.dir);
    snprintf(part, sizeof part, "%s/checkpoints", cfg.run.dir);
    FILE *blocker = fopen(part, "w");
    CHECK(blocker != NULL, "cannot create %s", part);
    if (blocker) fclose(blocker);
    bf_train_options quiet = {.quiet = 1, .log = stderr};
    bf_train_result failed;
    const bf_status st = bf_train(&cfg, &quiet, &failed);
    CHECK(st != BF_OK && strstr(bf_last_error(), "rank 0") && strstr(bf_last_error(), "is not a directory"),
          "--gpus 2 with rank 0 failing: status %d, error '%s' (want rank 0's checkpoint error)", (int)st,
          bf_last_error());
    printf("--gpus 2, rank 0 failing: %s\n", bf_last_error());
}

int main(void) {
    if (bf_cuda_device_count() < 1) bf_test_skip("no CUDA device");
    if (!bf_comm_nccl_built()) bf_test_skip("bioflex was built without NCCL");

    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &b));
    bf_comm *c = NULL;
    int device = 0;
    CHECK_OK(bf_comm_create_nccl_group(1, &device, 0, 1, NULL, 30.0, &c));
    if (b && c) check_one_rank_collectives(b, c);

    char tmp[] = "/tmp/bioflex_nccl_XXXXXX";
    if (!mkdtemp(tmp)) bf_test_skip("cannot make a temporary directory");
    bf_config cfg;
    bf_config_defaults(&cfg);
    const char *sets[] = {"run.device=cuda", "run.epochs=2", "run.log_interval=3", "data.dataset=procedural",
                          "data.procedural_train=256", "data.procedural_test=64", "data.procedural_size=16",
                          "data.procedural_classes=4", "data.batch_size=32", "model.arch=cnn", "model.channels=8,16",
                          "model.hidden=32", "model.batchnorm=true", "model.dropout=0", "optim.optimizer=sgd",
                          "optim.lr=0.05", "optim.momentum=0.9", "optim.grad_clip_norm=5",
                          /* the same convolution algorithms in both runs, none summing with atomics:
                           * the comparison then sees only what the NCCL path changes */
                          "run.deterministic=true"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) CHECK_OK(bf_config_set(&cfg, sets[i]));
    CHECK_OK(bf_config_validate(&cfg));
    bf_train_options opt = {.quiet = 1, .log = stderr};
    bf_train_result plain, nccl;
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/plain", tmp);
    CHECK_OK(bf_train(&cfg, &opt, &plain));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/nccl", tmp);
    CHECK_OK(bf_config_set(&cfg, "run.force_nccl=true"));
    CHECK_OK(bf_train(&cfg, &opt, &nccl));
    CHECK(plain.steps_done == nccl.steps_done && plain.steps_done == 16, "steps %ld vs %ld", plain.steps_done,
          nccl.steps_done);
    CHECK_CLOSE(plain.final_eval.top1, nccl.final_eval.top1, 1e-9, 0, "test top-1, plain vs NCCL");
    CHECK_CLOSE(plain.final_eval.loss, nccl.final_eval.loss, 1e-6, 1e-5, "test loss, plain vs NCCL");
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/model.safetensors", plain.checkpoint);
    snprintf(pb, sizeof pb, "%s/model.safetensors", nccl.checkpoint);
    compare_weights(pa, pb);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/plain", tmp);
    check_comm_exposed(dir, 0);
    snprintf(dir, sizeof dir, "%s/nccl", tmp);
    check_comm_exposed(dir, 1);

    /* Buckets launched in the middle of the backward pass: above, the whole model (a few thousand
     * parameters) fits the last bucket, which bf_grad_buckets_finish launches after the backward.
     * With a 2048-wide hidden layer (256 x 2048 weights, 2 MiB) and 1 MiB buckets, the hidden
     * layer's bucket is handed out while the convolutions' backward still runs on the compute stream. */
    CHECK_OK(bf_config_set(&cfg, "model.hidden=2048"));
    CHECK_OK(bf_config_set(&cfg, "run.bucket_mib=1"));
    CHECK_OK(bf_config_set(&cfg, "run.force_nccl=false"));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/wide_plain", tmp);
    CHECK_OK(bf_train(&cfg, &opt, &plain));
    CHECK_OK(bf_config_set(&cfg, "run.force_nccl=true"));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/wide_nccl", tmp);
    CHECK_OK(bf_train(&cfg, &opt, &nccl));
    CHECK_CLOSE(plain.final_eval.top1, nccl.final_eval.top1, 1e-9, 0, "wide CNN, 1 MiB buckets: test top-1");
    snprintf(pa, sizeof pa, "%s/model.safetensors", plain.checkpoint);
    snprintf(pb, sizeof pb, "%s/model.safetensors", nccl.checkpoint);
    compare_weights(pa, pb);
    CHECK_OK(bf_config_set(&cfg, "model.hidden=32"));

    /* BU-TD (butd_train.c's loop): its gradients averaged by bf_dp_average_floats, enqueued on the
     * communicator's stream without a host wait; Counter-Hebb with separate weights. */
    const char *butd[] = {"butd.network=fc", "butd.hidden=16", "butd.weights=separate", "butd.learning=counter_hebb"};
    bf_config_defaults(&cfg); /* the same run without its [model] keys, which a BU-TD run refuses */
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (strncmp(sets[i], "model.", 6) != 0) CHECK_OK(bf_config_set(&cfg, sets[i]));
    for (size_t i = 0; i < sizeof butd / sizeof butd[0]; i++) CHECK_OK(bf_config_set(&cfg, butd[i]));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/butd_plain", tmp);
    CHECK_OK(bf_config_validate(&cfg));
    CHECK_OK(bf_train(&cfg, &opt, &plain));
    CHECK_OK(bf_config_set(&cfg, "run.force_nccl=true"));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/butd_nccl", tmp);
    CHECK_OK(bf_train(&cfg, &opt, &nccl));
    CHECK(plain.steps_done == nccl.steps_done && plain.steps_done == 16, "BU-TD steps %ld vs %ld", plain.steps_done,
          nccl.steps_done);
    CHECK_CLOSE(plain.final_eval.top1, nccl.final_eval.top1, 1e-9, 0, "BU-TD test accuracy, plain vs NCCL");
    compare_weights(plain.checkpoint, nccl.checkpoint);
    check_comm_exposed(cfg.run.dir, 1); /* its one all-reduce per step, timed as CNNs' buckets are */
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/butd_plain", tmp);
    check_comm_exposed(cfg.run.dir, 0);

    if (bf_cuda_device_count() >= 2) check_two_gpus(tmp, sets, sizeof sets / sizeof sets[0]);
    else printf("one GPU: --gpus 2 not checked\n");
    bf_comm_destroy(c, 0);
    bf_backend_destroy(b);
    bf_test_remove_dir_if_passed(tmp);
    return bf_test_finish();
}

/* test_butd_resume.c - checkpoints and --resume of BU-TD runs (butd_train.c), on the CPU:
 *   - a Counter-Hebb run (separate weights, Adam) of 2 epochs, and one of 1 epoch resumed for the
 *     second from its checkpoint, end with bit-identical weights (task head included);
 *   - a run stopped on request (bf_train_options.stop) after every step and resumed each time ends
 *     bit-identical to the straight run (every position inside an epoch resumes exactly);
 *   - a complete run resumed again trains nothing and reports the same test score;
 *   - keep_best keeps checkpoints/best at the best epoch's evaluation; a best whose eval_top1 is no
 *     top-1 refuses a keep_best resume (naming the file and the key), and only a keep_best one;
 *   - checkpoints/epoch_0001 holds model.safetensors and state.safetensors, `latest` names the last;
 *   - a checkpoint of another network shape is refused with a message naming the tensor. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static void configure(bf_config *cfg, const char *dir, int epochs) {
    bf_config_defaults(cfg);
    const char *sets[] = {"run.threads=1", "run.device=cpu", "run.checkpoint_every=1", "data.dataset=procedural",
                          "data.procedural_size=8", "data.procedural_channels=1", "data.procedural_train=400",
                          "data.procedural_test=100", "data.batch_size=20", "optim.optimizer=adamw", "optim.lr=0.002",
                          "optim.weight_decay=0", "schedule.type=step", "schedule.step_size=1", "schedule.gamma=0.95",
                          "butd.network=fc", "butd.hidden=32", "butd.learning=counter_hebb", "butd.weights=separate",
                          "butd.noise_std=0.2"}; /* weight noise: its draws must resume too */
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) CHECK_OK(bf_config_set(cfg, sets[i]));
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s", dir);
    cfg->run.epochs = epochs;
}

/* Number of tensors of a that differ in bytes from b's tensor of the same name (-1: unreadable). */
static int differing_tensors(const char *a_path, const char *b_path) {
    bf_st_file *a = NULL, *b = NULL;
    if (bf_safetensors_read(a_path, &a) != BF_OK || bf_safetensors_read(b_path, &b) != BF_OK) {
        bf_safetensors_close(a);
        return -1;
    }
    int differ = bf_safetensors_count(a) == bf_safetensors_count(b) ? 0 : 1;
    for (int i = 0; i < bf_safetensors_count(a); i++) {
        const bf_st_tensor *x = bf_safetensors_at(a, i), *y = bf_safetensors_find(b, x->name);
        differ += !y || x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes) != 0;
    }
    bf_safetensors_close(a);
    bf_safetensors_close(b);
    return differ;
}

int main(void) {
    char root[] = "/tmp/bioflex_butd_resume_XXXXXX", straight[128], split[128], stepped[128], path[256];
    if (!mkdtemp(root)) return 1;
    snprintf(straight, sizeof straight, "%s/straight", root);
    snprintf(split, sizeof split, "%s/split", root);
    snprintf(stepped, sizeof stepped, "%s/stepped", root);
    bf_train_options quiet = {.quiet = 1};
    bf_train_result res;
    bf_config cfg;

    char straight_log[160], stepped_log[160];
    snprintf(straight_log, sizeof straight_log, "%s/straight.log", root);
    snprintf(stepped_log, sizeof stepped_log, "%s/stepped.log", root);
    FILE *logs[2] = {fopen(straight_log, "w"), fopen(stepped_log, "w")};
    CHECK(logs[0] && logs[1], "logs open in %s", root);
    configure(&cfg, straight, 2);
    bf_train_options logged = {.log = logs[0]};
    CHECK_OK(bf_train(&cfg, &logged, &res));
    configure(&cfg, split, 1);
    CHECK_OK(bf_train(&cfg, &quiet, &res));
    snprintf(path, sizeof path, "%s/checkpoints/epoch_0001/state.safetensors", split);
    CHECK(access(path, R_OK) == 0, "%s written", path);
    configure(&cfg, split, 2);
    bf_train_options resume = {.quiet = 1, .resume = split};
    CHECK_OK(bf_train(&cfg, &resume, &res));
    CHECK(res.epochs_done == 2 && res.final_eval.samples == 100, "the resumed run did epoch 2 (%d) and scored the test set",
          res.epochs_done);
    /* Resumed once more, already complete: nothing to train, and it still reports the test score. */
    bf_train_result again;
    CHECK_OK(bf_train(&cfg, &resume, &again));
    CHECK(again.epochs_done == 2 && again.steps_done == res.steps_done && again.final_eval.samples == 100 &&
              again.final_eval.top1 == res.final_eval.top1 && again.final_eval.loss == res.final_eval.loss,
          "a complete run resumed reports its score: %d epochs, %d samples, top-1 %.4f (want %.4f)", again.epochs_done,
          again.final_eval.samples, again.final_eval.top1, res.final_eval.top1);

    char a[256], b[256];
    snprintf(a, sizeof a, "%s/butd_model.safetensors", straight);
    snprintf(b, sizeof b, "%s/butd_model.safetensors", split);
    int differ = differing_tensors(a, b);
    CHECK(differ == 0, "2 epochs straight and 1 + 1 resumed: %d tensors differ", differ);
    snprintf(a, sizeof a, "%s/checkpoints/epoch_0001/model.safetensors", straight);
    differ = differing_tensors(a, b);
    CHECK(differ > 0, "the weights after epoch 1 and after epoch 2 differ (the comparison can fail: %d)", differ);

    /* Stopped after every one of the 2 x 20 steps (the request stays set), resumed each time. */
    atomic_int stop = 1;
    bf_train_options stopping = {.log = logs[1], .stop = &stop};
    configure(&cfg, stepped, 2);
    int runs = 0, bad_steps = 0;
    do {
        if (bf_train(&cfg, &stopping, &res) != BF_OK) break;
        runs++;
        bad_steps += res.steps_done != runs;
        stopping.resume = stepped;
    } while (res.interrupted && runs < 50);
    CHECK(runs == 40 && !res.interrupted && bad_steps == 0,
          "one step per run: 40 runs, the last completes (got %d, interrupted %d, %d off)", runs, res.interrupted,
          bad_steps);
    snprintf(a, sizeof a, "%s/butd_model.safetensors", straight);
    snprintf(b, sizeof b, "%s/butd_model.safetensors", stepped);
    differ = differing_tensors(a, b);
    CHECK(differ == 0, "2 epochs straight and stopped after every step: %d tensors differ", differ);
    /* Its train lines (one an epoch: log_interval 50) and epoch losses average the epoch's 20 steps,
     * though each run trained one: the checkpoints carry the sums not yet logged. */
    fclose(logs[0]), fclose(logs[1]);
    snprintf(a, sizeof a, "%s/metrics.jsonl", straight);
    snprintf(b, sizeof b, "%s/metrics.jsonl", stepped);
    int logged_steps = 0;
    differ = bf_test_train_lines_differ(a, b, &logged_steps);
    CHECK(logged_steps == 2 && differ == 0, "stopped after every step: the 2 train lines as straight (%d, %d differ)",
          logged_steps, differ);
    char want[2][64] = {"", ""}, got[2][64] = {"", ""};
    for (int l = 0; l < 2; l++) {
        FILE *f = fopen(l == 0 ? straight_log : stepped_log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            const char *at = strstr(line, ": train loss ");
            int epoch = atoi(line + 6) - 1; /* "epoch N: train loss X, ..." */
            if (strncmp(line, "epoch ", 6) == 0 && at && epoch >= 0 && epoch < 2)
                snprintf(l == 0 ? want[epoch] : got[epoch], 64, "%.*s", (int)strcspn(at, ",("), at);
        }
        if (f) fclose(f);
    }
    for (int e = 0; e < 2; e++)
        CHECK(want[e][0] && strcmp(want[e], got[e]) == 0, "epoch %d's train loss after a stop at every step: '%s' (want '%s')",
              e + 1, got[e], want[e]);

    /* keep_best: checkpoints/best holds the best of the epochs' evaluations in metrics.jsonl */
    char best_dir[160];
    snprintf(best_dir, sizeof best_dir, "%s/best", root);
    configure(&cfg, best_dir, 3);
    CHECK_OK(bf_config_set(&cfg, "run.keep_best=true"));
    CHECK_OK(bf_config_set(&cfg, "optim.lr=0.02")); /* learns well in 3 epochs (41, 72, 87%) */
    CHECK_OK(bf_train(&cfg, &quiet, &res));
    double before = -1;
    CHECK_OK(bf_checkpoint_read_best_top1(best_dir, &before));
    /* 2 more epochs with updates that wreck the network (47, 40%): they must not replace the best */
    configure(&cfg, best_dir, 5);
    CHECK_OK(bf_config_set(&cfg, "run.keep_best=true"));
    CHECK_OK(bf_config_set(&cfg, "optim.lr=0.02"));
    CHECK_OK(bf_config_set(&cfg, "butd.noise_std=100")); /* every update times N(1, 100): random walks */
    bf_train_options resume_best = {.quiet = 1, .resume = best_dir};
    CHECK_OK(bf_train(&cfg, &resume_best, &res));
    double best = -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", best_dir);
    FILE *f = fopen(path, "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        const char *t = strstr(line, "\"top1\":");
        if (t && atof(t + 7) > best) best = atof(t + 7);
    }
    if (f) fclose(f);
    double stored = -1;
    CHECK_OK(bf_checkpoint_read_best_top1(best_dir, &stored));
    CHECK(best > 0 && stored == best && stored == before,
          "BU-TD keep_best: checkpoints/best holds %.4f, the best evaluation %.4f, the best of the first 3 epochs %.4f",
          stored, best, before);
    /* a best whose eval_top1 is no top-1 (NaN: never beaten) refuses a keep_best resume naming the file
     * and the key; without keep_best it is not read, and the complete run resumes */
    snprintf(path, sizeof path, "%s/checkpoints/best/state.safetensors", best_dir);
    bf_st_meta nan_top1 = {"eval_top1", "nan"};
    CHECK_OK(bf_safetensors_write(path, NULL, 0, &nan_top1, 1));
    bf_status refused = bf_train(&cfg, &resume_best, &res);
    CHECK(refused == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "best/state.safetensors") &&
              strstr(bf_last_error(), "\"eval_top1\""),
          "BU-TD keep_best resume under eval_top1 = \"nan\" refused naming the file and the key (%s: %s)",
          bf_status_name(refused), refused == BF_OK ? "" : bf_last_error());
    CHECK_OK(bf_config_set(&cfg, "run.keep_best=false"));
    CHECK_OK(bf_train(&cfg, &resume_best, &res));

    snprintf(path, sizeof path, "%s/checkpoints/latest", split);
    char name[32] = {0};
    if ((f = fopen(path, "r"))) {
        if (!fgets(name, sizeof name, f)) name[0] = 0;
        fclose(f);
    }
    CHECK(!strncmp(name, "epoch_0002", 10), "latest names epoch_0002 (got '%s')", name);

    /* another hidden width: the shapes differ */
    configure(&cfg, split, 3);
    CHECK_OK(bf_config_set(&cfg, "butd.hidden=16"));
    bf_status s = bf_train(&cfg, &resume, &res);
    CHECK(s != BF_OK && strstr(bf_last_error(), "core_net.0.weight"), "a checkpoint of another width is refused: %s",
          bf_last_error());
    /* shared weights: resuming them is refused (another optimiser state and network), but a new run
     * may start from them ([model] init_weights): the file's back_weights are passed over */
    configure(&cfg, split, 3);
    CHECK_OK(bf_config_set(&cfg, "butd.weights=shared"));
    s = bf_train(&cfg, &resume, &res);
    CHECK(s == BF_ERR_CHECKPOINT, "a separate-weights checkpoint resumed with shared weights is refused: %s",
          bf_last_error());
    char shared_dir[160];
    snprintf(shared_dir, sizeof shared_dir, "%s/shared_from_separate", root);
    configure(&cfg, shared_dir, 1);
    CHECK_OK(bf_config_set(&cfg, "butd.weights=shared"));
    snprintf(cfg.model.init_weights, sizeof cfg.model.init_weights, "%s", split);
    CHECK_OK(bf_train(&cfg, &quiet, &res));
    /* a tensor of no BU-TD network's kind is still refused: the run's weights plus a stray one */
    char weights[256];
    snprintf(weights, sizeof weights, "%s/checkpoints/epoch_0001/model.safetensors", shared_dir);
    snprintf(path, sizeof path, "%s/stray.safetensors", root);
    bf_st_file *trained = NULL;
    CHECK_OK(bf_safetensors_read(weights, &trained));
    int n = trained ? bf_safetensors_count(trained) : 0;
    bf_st_tensor tensors[64];
    for (int i = 0; i < n && i < 63; i++) tensors[i] = *bf_safetensors_at(trained, i);
    float one = 1.0f;
    tensors[n] = (bf_st_tensor){.name = "core_net.9.weight", .dtype = BF_DTYPE_F32, .ndim = 1, .shape = {1},
                                .data = &one, .nbytes = sizeof one};
    bf_st_meta kind = {"bioflex_network", "butd"};
    CHECK(n > 0 && n < 63, "the trained weights hold %d tensors", n);
    CHECK_OK(bf_safetensors_write(path, tensors, n + 1, &kind, 1));
    bf_safetensors_close(trained);
    configure(&cfg, shared_dir, 1);
    CHECK_OK(bf_config_set(&cfg, "butd.weights=shared"));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/stray_run", root);
    snprintf(cfg.model.init_weights, sizeof cfg.model.init_weights, "%s", path);
    s = bf_train(&cfg, &quiet, &res);
    CHECK(s != BF_OK && strstr(bf_last_error(), "core_net.9.weight, which this BU-TD network does not have"),
          "a weights file holding a tensor the network lacks is refused: %s", bf_last_error());

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return bf_test_finish();
}

/* test_checkpoint.c - checkpoints and exact resume on the CPU backend:
 *   - a run stopped after epoch 1 and resumed ends with weights and optimiser state
 *     bit-identical to an uninterrupted run (SGD with dropout, AdamW and Adam); an Adam checkpoint
 *     resumed as AdamW is refused;
 *   - 1 and 3 CPU threads train bit-identical weights;
 *   - the weights file carries PyTorch state_dict names, shapes and the BN buffers;
 *   - a run stopped on request (bf_train_options.stop, a signal in bioflex-train) after every single
 *     step and resumed each time ends bit-identical too: each position inside an epoch and at its
 *     end resumes exactly, and only the newest checkpoint inside an epoch is kept;
 *   - [run] checkpoint_every_steps writes checkpoints inside the epoch;
 *   - a fresh run in a directory that holds a run warns and names --resume;
 *   - [run] keep_best keeps checkpoints/best at the evaluation with the highest top-1, and
 *     keep_checkpoints removes the older epoch checkpoints;
 *   - [model] init_weights loads a weights file by name (init_exclude keeps prefixes at their
 *     initialisation), refuses a file of another shape naming the tensor, and a run started from
 *     trained weights with a vanishing learning rate scores what they score;
 *   - a corrupted, truncated or mismatched checkpoint (also weights and state from two checkpoints)
 *     is refused with a message naming the check; so is a resume under keep_best whose
 *     checkpoints/best holds an eval_top1 that is no top-1 in [0, 1] (one without keep_best goes on). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static char root[256];
static double trained_loss = -1; /* the final test loss of test_exact_resume's SGD run (full_sgd) */

static void small_config(bf_config *cfg, const char *run, bf_optimizer_kind opt) {
    bf_config_defaults(cfg);
    snprintf(cfg->run.dir, sizeof cfg->run.dir, "%s/%s", root, run);
    cfg->run.device = BF_DEVICE_SEL_CPU;
    cfg->run.epochs = 3;
    cfg->run.log_interval = 4;
    cfg->run.threads = 2;
    cfg->data.dataset = BF_DATASET_PROCEDURAL;
    cfg->data.procedural_train = 200;
    cfg->data.procedural_test = 64;
    cfg->data.procedural_size = 12;
    cfg->data.procedural_channels = 3;
    cfg->data.procedural_classes = 4;
    cfg->data.batch_size = 32;
    cfg->data.loader_threads = 3;
    cfg->data.augment_flip = 1;
    cfg->model.arch = BF_ARCH_CNN;
    cfg->model.channels[0] = 4;
    cfg->model.channels[1] = 8;
    cfg->model.num_channels = 2;
    cfg->model.hidden = 16;
    cfg->model.dropout = 0.3f;
    cfg->optim.optimizer = opt;
    cfg->optim.lr = opt == BF_OPTIM_SGD ? 0.05f : 0.01f;
    cfg->optim.nesterov = opt == BF_OPTIM_SGD; /* adam and adamw have none */
    cfg->optim.weight_decay = 1e-4f;
    cfg->optim.grad_clip_norm = 5.0f;
    cfg->schedule.type = BF_SCHED_COSINE;
    cfg->schedule.unit = BF_SCHED_UNIT_STEP;
    cfg->schedule.warmup = 3;
}

static FILE *quiet_log(void) { return fopen("/dev/null", "w"); }

/* Trains cfg to its end with the log discarded. */
static void train_quietly(const bf_config *cfg) {
    FILE *log = quiet_log();
    bf_train_options o = {.quiet = 1, .log = log};
    bf_train_result r;
    CHECK_OK(bf_train(cfg, &o, &r));
    fclose(log);
}

/* Every tensor of two safetensors files has identical bytes. */
static int files_identical(const char *a, const char *b) {
    bf_st_file *fa = NULL, *fb = NULL;
    if (bf_safetensors_read(a, &fa) != BF_OK || bf_safetensors_read(b, &fb) != BF_OK) return 0;
    int same = bf_safetensors_count(fa) == bf_safetensors_count(fb);
    for (int i = 0; same && i < bf_safetensors_count(fa); i++) {
        const bf_st_tensor *ta = bf_safetensors_at(fa, i), *tb = bf_safetensors_find(fb, ta->name);
        same = tb && ta->nbytes == tb->nbytes && memcmp(ta->data, tb->data, ta->nbytes) == 0;
        if (!same) fprintf(stderr, "tensor %s differs\n", ta->name);
    }
    bf_safetensors_close(fa);
    bf_safetensors_close(fb);
    return same;
}

static void test_exact_resume(bf_optimizer_kind opt, const char *tag) {
    FILE *log = quiet_log();
    bf_train_options quiet = {.quiet = 1, .log = log};
    bf_config full, resumed;
    char name[64];
    snprintf(name, sizeof name, "full_%s", tag);
    small_config(&full, name, opt);
    bf_train_result r1, r2;
    CHECK_OK(bf_train(&full, &quiet, &r1));
    CHECK(r1.epochs_done == 3 && r1.steps_done == 21, "%s: 3 epochs of 7 steps (got %d, %ld)", tag, r1.epochs_done, r1.steps_done);
    if (opt == BF_OPTIM_SGD) trained_loss = r1.final_eval.loss;

    /* Resume a new run from the uninterrupted run's epoch-1 checkpoint: as if it had crashed there. */
    snprintf(name, sizeof name, "resumed_%s", tag);
    small_config(&resumed, name, opt);
    char from[512];
    snprintf(from, sizeof from, "%s/checkpoints/epoch_0001", full.run.dir);
    bf_train_options resume = {.resume = from, .quiet = 1, .log = log};
    CHECK_OK(bf_train(&resumed, &resume, &r2));
    CHECK(r2.steps_done == 21, "%s: resumed run ends at step %ld", tag, r2.steps_done);

    char a[600], b[600];
    snprintf(a, sizeof a, "%s/checkpoints/epoch_0003/model.safetensors", full.run.dir);
    snprintf(b, sizeof b, "%s/checkpoints/epoch_0003/model.safetensors", resumed.run.dir);
    CHECK(files_identical(a, b), "%s: weights after resume are bit-identical to the uninterrupted run", tag);
    snprintf(a, sizeof a, "%s/checkpoints/epoch_0003/state.safetensors", full.run.dir);
    snprintf(b, sizeof b, "%s/checkpoints/epoch_0003/state.safetensors", resumed.run.dir);
    CHECK(files_identical(a, b), "%s: optimiser state after resume is bit-identical", tag);
    CHECK(r1.final_eval.top1 == r2.final_eval.top1 && r1.final_eval.loss == r2.final_eval.loss,
          "%s: same final test metrics (%.6f vs %.6f)", tag, r1.final_eval.loss, r2.final_eval.loss);

    /* A resumed run can also be pointed at the run directory: it takes checkpoints/latest. */
    char dir[BF_PATH_MAX];
    CHECK_OK(bf_checkpoint_resolve(full.run.dir, dir));
    CHECK(strstr(dir, "epoch_0003") != NULL, "latest resolves to the last checkpoint (%s)", dir);
    /* ... or at its checkpoints/ directory, or the latest file itself: the same checkpoint */
    char via[BF_PATH_MAX + 32], other[BF_PATH_MAX];
    snprintf(via, sizeof via, "%s/checkpoints", full.run.dir);
    CHECK_OK(bf_checkpoint_resolve(via, other));
    CHECK(strcmp(other, dir) == 0, "checkpoints/ resolves like the run directory (%s vs %s)", other, dir);
    snprintf(via, sizeof via, "%s/checkpoints/latest", full.run.dir);
    CHECK_OK(bf_checkpoint_resolve(via, other));
    CHECK(strcmp(other, dir) == 0, "checkpoints/latest resolves like the run directory (%s vs %s)", other, dir);
    fclose(log);
}

/* Whether the file at path has a line holding both needles. */
/* A CPU run gives the same bits with any thread count: the reductions cut their work by the
 * problem's size, not by the threads (cpu_backend.h). The classifier here is wide enough for its
 * GEMMs to be sliced, the batch has more images than threads for the conv weight gradients, and the
 * gradient norm (clipping) sums over more than one block. */
static void test_thread_count(void) {
    char final[2][700];
    const int threads[2] = {1, 3};
    for (int i = 0; i < 2; i++) {
        bf_config cfg;
        char run[32];
        snprintf(run, sizeof run, "threads_%d", threads[i]);
        small_config(&cfg, run, BF_OPTIM_SGD);
        cfg.run.threads = threads[i];
        cfg.run.epochs = 2;
        cfg.model.hidden = 256;
        train_quietly(&cfg);
        snprintf(final[i], sizeof final[i], "%s/checkpoints/epoch_0002/model.safetensors", cfg.run.dir);
    }
    CHECK(files_identical(final[0], final[1]), "1 and 3 CPU threads train bit-identical weights");
}

static int log_has_line(const char *path, const char *a, const char *b) {
    FILE *f = fopen(path, "r");
    char line[2048];
    int found = 0;
    while (f && fgets(line, sizeof line, f)) found |= strstr(line, a) && strstr(line, b);
    if (f) fclose(f);
    return found;
}

/* The "lr" of the metrics.jsonl train line of optimiser step `step` (-1 when there is none). */
static double logged_lr(const char *metrics, long step) {
    FILE *f = fopen(metrics, "r");
    char line[4096], key[64];
    snprintf(key, sizeof key, "\"step\":%ld,", step);
    double lr = -1;
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "\"lr\":");
        if (strstr(line, "\"type\":\"train\"") && strstr(line, key) && at) lr = strtod(at + 5, NULL);
    }
    if (f) fclose(f);
    return lr;
}

/* [run] resume_schedule = restart: the schedule starts again at the resume position, as the
 * reference codes' resumes did, and the checkpoints after it keep that start. full_sgd's run: 7
 * steps an epoch, a per-step cosine over 21 after 3 warm-up steps, lr 0.05. */
static void test_schedule_restart(void) {
    bf_config cfg;
    small_config(&cfg, "restarted", BF_OPTIM_SGD);
    cfg.run.resume_schedule = BF_RESUME_SCHEDULE_RESTART;
    char from[512], log_path[600], metrics[600], state[700];
    snprintf(from, sizeof from, "%s/full_sgd/checkpoints/epoch_0001", root);
    snprintf(log_path, sizeof log_path, "%s/restarted.log", root);
    FILE *text = fopen(log_path, "w");
    bf_train_options resume = {.resume = from, .quiet = 1, .log = text};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &resume, &r));
    fclose(text);
    CHECK(log_has_line(log_path, "note: [run] resume_schedule = restart", "starts again here, at 0.005"),
          "the restart is noted with the warm-up's first rate (0.1 x 0.05)");
    /* step 12 (the 5th after the resume, logged every 4): position 4 of the restarted schedule, the
     * cosine's first step after the warm-up, 0.05 (1 + cos(pi/18)) / 2; uninterrupted it is position
     * 11: 0.05 (1 + cos(8 pi/18)) / 2 */
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", cfg.run.dir);
    const double got = logged_lr(metrics, 12), want = 0.05 * 0.5 * (1.0 + cos(3.14159265358979323846 / 18.0));
    CHECK(fabs(got - want) < 1e-6, "restarted schedule: step 12's rate %.7f, expected %.7f", got, want);
    snprintf(state, sizeof state, "%s/checkpoints/epoch_0003/state.safetensors", cfg.run.dir);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(state, &f));
    const char *start = f ? bf_safetensors_meta(f, "schedule_start") : NULL;
    CHECK(start && !strcmp(start, "1 0"), "the later checkpoints keep the schedule's start (%s)", start ? start : "none");
    if (f) bf_safetensors_close(f);
}

/* A run resumed with more epochs continues on another cosine: the log says so, with both schedules
 * and the rate it now has; resumed under the same schedule, it says nothing. Uses full_sgd. */
static void test_schedule_change_noted(void) {
    bf_config extended;
    small_config(&extended, "extended", BF_OPTIM_SGD);
    extended.run.epochs = 4;
    char from[512], log_path[600];
    snprintf(from, sizeof from, "%s/full_sgd/checkpoints/epoch_0001", root);
    snprintf(log_path, sizeof log_path, "%s/extended.log", root);
    FILE *text = fopen(log_path, "w");
    bf_train_options resume = {.resume = from, .quiet = 1, .log = text};
    bf_train_result r;
    CHECK_OK(bf_train(&extended, &resume, &r));
    fclose(text);
    /* step 7 of 28, 3 warm-up steps: 0.05 * (1 + cos(pi * 4 / 25)) / 2 */
    CHECK(log_has_line(log_path, "note: ", "\"cosine per step from lr 0.05 to 0 over 3 epochs, after 3 steps of linear "
                       "warm-up from 0.1 x lr\"; this run's is \"cosine per step from lr 0.05 to 0 over 4 epochs, after 3 "
                       "steps of linear warm-up from 0.1 x lr\": the rate now follows this run's, 0.0469077 at step 7"),
          "resuming a 3-epoch cosine run with run.epochs = 4 names both schedules and the rate at step 7");

    bf_config same;
    small_config(&same, "same_schedule", BF_OPTIM_SGD);
    text = fopen(log_path, "w");
    resume.log = text;
    CHECK_OK(bf_train(&same, &resume, &r));
    fclose(text);
    CHECK(log_has_line(log_path, "resumed from", "epoch_0001") && !log_has_line(log_path, "note: ", "schedule") &&
              !log_has_line(log_path, "note: ", "trained on") && !log_has_line(log_path, "note: ", "nothing is left"),
          "resumed under the same schedule and data: the log says nothing of them");

    /* the finished 3-epoch run resumed with fewer epochs: nothing to train, and the log says so */
    bf_config fewer;
    small_config(&fewer, "fewer_epochs", BF_OPTIM_SGD);
    fewer.run.epochs = 2;
    snprintf(from, sizeof from, "%s/full_sgd/checkpoints/epoch_0003", root);
    text = fopen(log_path, "w");
    resume.log = text;
    CHECK_OK(bf_train(&fewer, &resume, &r));
    fclose(text);
    CHECK(log_has_line(log_path, "note: ", "has trained 3 epochs and [run] epochs = 2: nothing is left to train"),
          "a finished run resumed with fewer epochs says that it trains nothing");
}

/* The data order inside an epoch depends on the training set and the global batch: a checkpoint
 * inside an epoch resumed with another batch size is refused (naming both), resumed with the same
 * one it finishes; at an epoch boundary another batch size is only noted. */
static void test_data_change_on_resume(void) {
    bf_config cfg;
    small_config(&cfg, "data_change", BF_OPTIM_SGD);
    cfg.run.epochs = 1;
    atomic_int stop = 1; /* set from the start: the run stops after its first step */
    FILE *quiet = quiet_log();
    bf_train_options first = {.quiet = 1, .log = quiet, .stop = &stop};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &first, &r));
    CHECK(r.interrupted && r.steps_done == 1, "a stop requested before the first step stops after it (%ld steps)",
          r.steps_done);

    bf_config wider = cfg;
    wider.data.batch_size = 2 * cfg.data.batch_size;
    char refused_log[600];
    snprintf(refused_log, sizeof refused_log, "%s/refused_resume.log", root);
    FILE *refused_text = fopen(refused_log, "w");
    bf_train_options resume = {.resume = cfg.run.dir, .quiet = 1, .log = refused_text};
    bf_status s = bf_train(&wider, &resume, &r);
    fclose(refused_text);
    resume.log = quiet;
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "inside epoch 1 (after batch 1)") &&
              strstr(bf_last_error(), "\"procedural, 200 training samples in global batches of 32\"") &&
              strstr(bf_last_error(), "\"procedural, 200 training samples in global batches of 64\""),
          "a checkpoint inside an epoch resumed with another batch size is refused, naming both: %s", bf_last_error());
    CHECK(!log_has_line(refused_log, "resumed from", ""), "a refused resume does not say 'resumed from'");
    /* the order also depends on the shuffle and the subset, which keep the sample count */
    bf_config unshuffled = cfg;
    unshuffled.data.shuffle = 0;
    s = bf_train(&unshuffled, &resume, &r);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "inside epoch 1 (after batch 1)") &&
              strstr(bf_last_error(), "\"procedural, 200 training samples in global batches of 32, in file order\""),
          "a checkpoint inside an epoch resumed without the shuffle is refused: %s", bf_last_error());
    CHECK_OK(bf_train(&cfg, &resume, &r));
    CHECK(!r.interrupted && r.epochs_done == 1 && r.steps_done == 7, "resumed with its own batch size, the epoch "
          "finishes (%d epochs, %ld steps)", r.epochs_done, r.steps_done);

    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/data_change.log", root);
    FILE *text = fopen(log_path, "w");
    wider.run.epochs = 2;
    resume.log = text;
    CHECK_OK(bf_train(&wider, &resume, &r));
    fclose(text);
    CHECK(log_has_line(log_path, "note: ", "was trained on \"procedural, 200 training samples in global batches of 32\"; "
                       "this run trains on \"procedural, 200 training samples in global batches of 64\": from epoch 2 on"),
          "an epoch checkpoint resumed with another batch size notes both");
    CHECK(r.steps_done == 7 + 4, "the second epoch ran in batches of 64 (%ld steps in all)", r.steps_done);

    /* A step checkpoint after an epoch's last batch has no order left to continue: resumed with
     * another batch size it finishes that epoch (evaluation) and goes on in the new batches. */
    bf_config ends;
    small_config(&ends, "end_of_epoch", BF_OPTIM_SGD);
    ends.run.epochs = 2;
    bf_train_options step_by_step = {.quiet = 1, .log = quiet, .stop = &stop};
    for (int k = 0; k < 7; k++) { /* one step a run: the 7th stops after the epoch's last batch */
        CHECK_OK(bf_train(&ends, &step_by_step, &r));
        step_by_step.resume = ends.run.dir;
    }
    CHECK(r.interrupted && r.steps_done == 7 && r.epochs_done == 0, "stopped after epoch 1's last batch (%ld steps)",
          r.steps_done);
    bf_config ends_wider = ends;
    ends_wider.data.batch_size = 64;
    bf_train_options go_on = {.resume = ends.run.dir, .quiet = 1, .log = quiet};
    CHECK_OK(bf_train(&ends_wider, &go_on, &r));
    CHECK(!r.interrupted && r.epochs_done == 2 && r.steps_done == 7 + 4,
          "resumed with batches of 64 it finishes epoch 1 and trains epoch 2 in 4 steps (%d epochs, %ld steps)",
          r.epochs_done, r.steps_done);
    fclose(quiet);
}

/* The data phrase names what decides an epoch's samples: the Multi-(Fashion-)MNIST images are
 * generated from [data] multi_seed, so another seed is other data. */
static void test_data_phrase(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.dataset = BF_DATASET_MULTI_FASHION_MNIST;
    cfg.data.multi_seed = 7;
    char phrase[192];
    bf_resume_describe_data("multi_fashion_mnist", 1000, 64, &cfg.data, phrase, sizeof phrase);
    CHECK(strcmp(phrase, "multi_fashion_mnist, generated from seed 7, 1000 training samples in global batches of 64") == 0,
          "multi-digit data phrase: %s", phrase);
    cfg.data.dataset = BF_DATASET_FASHION_MNIST;
    bf_resume_describe_data("fashion_mnist", 1000, 64, &cfg.data, phrase, sizeof phrase);
    CHECK(strcmp(phrase, "fashion_mnist, 1000 training samples in global batches of 64") == 0,
          "stored data names no generation seed: %s", phrase);
}

/* A checkpoint records the network it trained: a resume as another network (here spiking neurons
 * over 2 steps where it had ReLUs: the same weights) is refused naming both; another way of
 * learning (dropout) is noted. Uses data_change's checkpoint after its one epoch. */
static void test_network_change_on_resume(void) {
    bf_config cfg;
    small_config(&cfg, "data_change", BF_OPTIM_SGD);
    cfg.run.epochs = 3;
    FILE *quiet = quiet_log();
    char from[600], log_path[600];
    snprintf(from, sizeof from, "%s/checkpoints/epoch_0001", cfg.run.dir);
    bf_train_options resume = {.resume = from, .quiet = 1, .log = quiet};
    bf_train_result r;
    bf_config spiking = cfg;
    spiking.model.spiking.neuron = BF_NEURON_LIF;
    spiking.model.spiking.time_steps = 2;
    bf_status s = bf_train(&spiking, &resume, &r);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "was trained as another network: spiking.neuron=none "
                                                            "spiking.time_steps=10, where this run has spiking.neuron=lif "
                                                            "spiking.time_steps=2."),
          "a resume as another network is refused, naming the keys that differ: %s", bf_last_error());
    snprintf(log_path, sizeof log_path, "%s/network_change.log", root);
    FILE *text = fopen(log_path, "w");
    bf_config less_dropout = cfg;
    less_dropout.model.dropout = 0.2f;
    resume.log = text;
    CHECK_OK(bf_train(&less_dropout, &resume, &r));
    fclose(text);
    CHECK(log_has_line(log_path, "note: ", "learned with model.dropout=0.3; this run learns with model.dropout=0.2 "
                       "from here on"),
          "a resume with another dropout notes both");
    fclose(quiet);
}

/* How many step_ checkpoint directories dir/checkpoints holds. */
static int step_checkpoints(const char *run_dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/checkpoints", run_dir);
    DIR *d = opendir(path);
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strncmp(e->d_name, "step_", 5) == 0;
    closedir(d);
    return n;
}

static void test_stop_every_step(void) {
    FILE *log = quiet_log();
    bf_config full, stepped;
    small_config(&full, "stop_full", BF_OPTIM_SGD);
    small_config(&stepped, "stop_stepped", BF_OPTIM_SGD);
    full.run.checkpoint_every = stepped.run.checkpoint_every = 0; /* the only epoch checkpoint: the last */
    bf_train_result r1, r2;
    bf_train_options quiet = {.quiet = 1, .log = log};
    CHECK_OK(bf_train(&full, &quiet, &r1));
    CHECK(!r1.interrupted && r1.steps_done == 21, "uninterrupted: 21 steps (got %ld)", r1.steps_done);

    /* The request stays set, so every run (fresh or resumed) trains one step and stops. */
    atomic_int stop = 1;
    bf_train_options o = {.quiet = 1, .log = log, .stop = &stop};
    int runs = 0, bad_steps = 0, bad_dirs = 0;
    do {
        if (bf_train(&stepped, &o, &r2) != BF_OK) break;
        runs++;
        bad_steps += r2.steps_done != runs;
        bad_dirs += r2.interrupted && step_checkpoints(stepped.run.dir) != 1;
        o.resume = stepped.run.dir;
    } while (r2.interrupted && runs < 30);
    CHECK(runs == 21 && !r2.interrupted, "one step per run: 21 runs, the last one completes (got %d, interrupted %d)",
          runs, r2.interrupted);
    CHECK(bad_steps == 0, "every run ends one step further (%d did not)", bad_steps);
    CHECK(bad_dirs == 0, "a stopped run leaves exactly one step_ checkpoint (%d runs did not)", bad_dirs);
    CHECK(step_checkpoints(stepped.run.dir) == 0, "the final epoch checkpoint removes the step_ ones (%d left)",
          step_checkpoints(stepped.run.dir));
    const char *files[2] = {"model.safetensors", "state.safetensors"};
    for (int f = 0; f < 2; f++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/checkpoints/epoch_0003/%s", full.run.dir, files[f]);
        snprintf(b, sizeof b, "%s/checkpoints/epoch_0003/%s", stepped.run.dir, files[f]);
        CHECK(files_identical(a, b), "stopped after every step: %s bit-identical to the uninterrupted run", files[f]);
    }
    CHECK(r1.final_eval.loss == r2.final_eval.loss && r1.final_eval.top1 == r2.final_eval.top1,
          "stopped after every step: same final test metrics (%.6f vs %.6f)", r1.final_eval.loss, r2.final_eval.loss);
    /* Every train line (log_interval 4) averages the interval's 4 steps, though each run trained
     * one: the checkpoints carry the sums not yet logged (once the line averaged the last step). */
    char metrics_full[600], metrics_stepped[600];
    snprintf(metrics_full, sizeof metrics_full, "%s/metrics.jsonl", full.run.dir);
    snprintf(metrics_stepped, sizeof metrics_stepped, "%s/metrics.jsonl", stepped.run.dir);
    int lines = 0, differ = bf_test_train_lines_differ(metrics_full, metrics_stepped, &lines);
    CHECK(lines == 8 && differ == 0, "stopped after every step: the 8 train lines' loss and accuracy as uninterrupted "
          "(%d logged, %d differ)", lines, differ);

    /* checkpoint_every_steps: checkpoints inside the epoch (the log names them), none left at the end. */
    bf_config every;
    small_config(&every, "every_steps", BF_OPTIM_SGD);
    every.run.epochs = 1;
    every.run.checkpoint_every_steps = 3;
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/every_steps.log", root);
    FILE *text = fopen(log_path, "w+");
    bf_train_options logged = {.quiet = 1, .log = text};
    CHECK_OK(bf_train(&every, &logged, &r1));
    fclose(text);
    int seen3 = log_has_line(log_path, "checkpoint:", "step_000000003");
    int seen6 = log_has_line(log_path, "checkpoint:", "step_000000006");
    CHECK(seen3 && seen6, "checkpoint_every_steps = 3 wrote step 3 and step 6 (%d, %d)", seen3, seen6);
    CHECK(step_checkpoints(every.run.dir) == 0, "the epoch checkpoint replaced them (%d left)", step_checkpoints(every.run.dir));

    /* The same config again, fresh: it warns that the directory holds a run and names --resume. */
    text = fopen(log_path, "w+");
    logged.log = text;
    CHECK_OK(bf_train(&every, &logged, &r1));
    fclose(text);
    CHECK(log_has_line(log_path, "already holds a run", "--resume"), "a fresh run in a used run directory warns and names --resume");
    fclose(log);
}

/* A model of cfg's architecture for the procedural data of small_config, on the CPU. */
static bf_model *fresh_model(const bf_config *cfg, bf_backend *b) {
    bf_dataset d;
    memset(&d, 0, sizeof d);
    d.c = cfg->data.procedural_channels, d.h = d.w = cfg->data.procedural_size;
    d.num_classes = cfg->data.procedural_classes;
    bf_model *m = NULL;
    CHECK_OK(bf_run_build_model(cfg, b, &d, 0, &m));
    return m;
}

/* 1 when the floats of parameter p of a and b are identical. */
static int same_param(const bf_model *a, const bf_model *b, int p) {
    return memcmp(a->param_data + a->params[p].offset, b->param_data + b->params[p].offset,
                  a->params[p].count * sizeof(float)) == 0;
}

/* FlexNet's released Exp 4 weights: its channel-wise max Flex2D layers carry a batch-norm on the
 * logits that the joint never uses. A flex model's weights with such inert bn_logits.* added load
 * without them; the same names on a layer that is no flex layer are still refused. */
static void test_inert_logits_bn(void) {
    bf_config cfg;
    small_config(&cfg, "flex_max", BF_OPTIM_SGD);
    cfg.run.epochs = 1;
    cfg.model.flex = 1;
    train_quietly(&cfg);
    char trained[700], with_bn[700];
    snprintf(trained, sizeof trained, "%s/checkpoints/epoch_0001/model.safetensors", cfg.run.dir);
    snprintf(with_bn, sizeof with_bn, "%s/reference_like.safetensors", cfg.run.dir);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(trained, &f));
    if (!f) return;
    enum { EXTRA = 5 };
    int n = bf_safetensors_count(f);
    bf_st_tensor *t = calloc((size_t)n + 2 * EXTRA, sizeof *t);
    for (int i = 0; i < n; i++) t[i] = *bf_safetensors_at(f, i);
    /* features.0 is the first flex layer (4 channels); features.99 is no layer at all */
    static const float ones[4] = {1, 1, 1, 1}, zeros[4] = {0, 0, 0, 0};
    static const int64_t tracked = 7;
    const char *owners[2] = {"features.0", "features.99"};
    for (int k = 0; k < 2; k++) {
        const char *fields[EXTRA] = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"};
        for (int j = 0; j < EXTRA; j++) {
            bf_st_tensor *e = &t[n + k * EXTRA + j];
            snprintf(e->name, sizeof e->name, "%s.bn_logits.%s", owners[k], fields[j]);
            int counter = j == EXTRA - 1;
            e->dtype = counter ? BF_DTYPE_I64 : BF_DTYPE_F32;
            e->ndim = counter ? 0 : 1;
            e->shape[0] = 4;
            e->data = counter ? (const void *)&tracked : (j == 0 || j == 3) ? (const void *)ones : (const void *)zeros;
            e->nbytes = counter ? sizeof tracked : sizeof ones;
        }
    }
    CHECK_OK(bf_safetensors_write(with_bn, t, n + EXTRA, NULL, 0));
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *source = fresh_model(&cfg, b), *loaded = fresh_model(&cfg, b);
    if (source && loaded) {
        CHECK_OK(bf_checkpoint_init_weights(trained, "", source));
        CHECK_OK(bf_checkpoint_init_weights(with_bn, "", loaded));
        int same = 1;
        for (int p = 0; p < source->num_params; p++) same &= same_param(source, loaded, p);
        CHECK(same, "the reference's inert bn_logits.* are passed over, the rest loads as without them");
        CHECK_OK(bf_safetensors_write(with_bn, t, n + 2 * EXTRA, NULL, 0));
        CHECK(bf_checkpoint_init_weights(with_bn, "", loaded) == BF_ERR_CHECKPOINT &&
                  strstr(bf_last_error(), "features.99.bn_logits"),
              "bn_logits of a layer that is no flex layer are refused: %s", bf_last_error());
    }
    bf_model_destroy(source);
    bf_model_destroy(loaded);
    bf_backend_destroy(b);
    free(t);
    bf_safetensors_close(f);
}

/* The threshold of a mask joint that does not learn it (frozen_random, as FlexNet's GPU runs had
 * it): the reference's files lack it or hold it as [1, C, H, W], and its loaders drop it, so such a
 * file loads every other tensor and leaves the model's own draw (specs/README 1-2). */
static const float *threshold_of(const bf_model *m, int layer) {
    return m->buffer_data + m->buffers[m->layers[layer].buffer_index[2]].offset;
}

static void test_unlearned_threshold_import(void) {
    bf_config cfg;
    small_config(&cfg, "flex_mask_frozen", BF_OPTIM_SGD);
    cfg.run.epochs = 1;
    cfg.model.flex = 1;
    cfg.model.flex_joint = BF_FLEX_JOINT_MASK;
    cfg.model.threshold_mode = BF_THRESHOLD_FROZEN_RANDOM;
    train_quietly(&cfg);
    char trained[700], without[700], reshaped[700];
    snprintf(trained, sizeof trained, "%s/checkpoints/epoch_0001/model.safetensors", cfg.run.dir);
    snprintf(without, sizeof without, "%s/no_threshold.safetensors", cfg.run.dir);
    snprintf(reshaped, sizeof reshaped, "%s/threshold_1chw.safetensors", cfg.run.dir);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(trained, &f));
    if (!f) return;
    int n = bf_safetensors_count(f), kept = 0, thresholds = 0;
    bf_st_tensor *all = calloc((size_t)n, sizeof *all), *rest = calloc((size_t)n, sizeof *rest);
    for (int i = 0; i < n; i++) {
        all[i] = *bf_safetensors_at(f, i);
        if (!strstr(all[i].name, ".threshold")) {
            rest[kept++] = all[i];
            continue;
        }
        thresholds++;
        bf_st_tensor *t = &all[i]; /* PlasticFlex's [1, C, H, W] */
        for (int d = t->ndim; d > 0; d--) t->shape[d] = t->shape[d - 1];
        t->shape[0] = 1;
        t->ndim++;
    }
    CHECK(thresholds > 0, "the mask-joint model's weights hold its frozen thresholds (%d)", thresholds);
    CHECK_OK(bf_safetensors_write(without, rest, kept, NULL, 0));
    CHECK_OK(bf_safetensors_write(reshaped, all, n, NULL, 0));
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_config other = cfg;
    other.run.seed = cfg.run.seed + 1; /* another draw of the thresholds */
    bf_model *source = fresh_model(&cfg, b), *own = fresh_model(&other, b);
    const char *files[2] = {without, reshaped};
    int flex0 = -1;
    for (int i = 0; own && i < own->num_layers && flex0 < 0; i++)
        if (own->layers[i].kind == BF_LAYER_FLEX) flex0 = i;
    for (int v = 0; v < 2 && source && own && flex0 >= 0; v++) {
        bf_model *loaded = fresh_model(&other, b);
        if (!loaded) continue;
        CHECK_OK(bf_checkpoint_init_weights(trained, "", source));
        CHECK_OK(bf_checkpoint_init_weights(files[v], "", loaded));
        int same = 1;
        for (int p = 0; p < source->num_params; p++) same &= same_param(source, loaded, p);
        const size_t count = own->buffers[own->layers[flex0].buffer_index[2]].count;
        CHECK(same && memcmp(threshold_of(loaded, flex0), threshold_of(own, flex0), count * sizeof(float)) == 0 &&
                  memcmp(threshold_of(loaded, flex0), threshold_of(source, flex0), count * sizeof(float)) != 0,
              "%s: every parameter loads, the frozen thresholds keep the model's own draw",
              v ? "thresholds as [1, C, H, W]" : "no thresholds");
        bf_model_destroy(loaded);
    }
    bf_model_destroy(source);
    bf_model_destroy(own);
    bf_backend_destroy(b);
    free(all);
    free(rest);
    bf_safetensors_close(f);
}

static void test_init_weights(void) {
    bf_config cfg, other;
    small_config(&cfg, "full_sgd", BF_OPTIM_SGD); /* trained by test_exact_resume */
    char trained[600];
    snprintf(trained, sizeof trained, "%s/checkpoints/epoch_0003", cfg.run.dir);
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_model *source = fresh_model(&cfg, b), *init = fresh_model(&cfg, b), *loaded = fresh_model(&cfg, b);
    bf_model *partial = fresh_model(&cfg, b);
    if (!source || !init || !loaded || !partial) return;
    CHECK_OK(bf_checkpoint_load_model(trained, source));
    CHECK_OK(bf_checkpoint_init_weights(trained, "", loaded)); /* a checkpoint directory */
    char file[700];
    snprintf(file, sizeof file, "%s/model.safetensors", trained);
    CHECK_OK(bf_checkpoint_init_weights(file, " classifier.3 ,features.9", partial)); /* a file, a new head */
    int all = 1, kept = 1, taken = 1, head = 0;
    for (int p = 0; p < source->num_params; p++) {
        all &= same_param(source, loaded, p);
        int is_head = strncmp(source->params[p].name, "classifier.3.", 13) == 0;
        head += is_head;
        if (is_head) kept &= same_param(init, partial, p) && !same_param(source, partial, p);
        else taken &= same_param(source, partial, p);
    }
    CHECK(all, "init_weights loads every parameter of the checkpoint");
    CHECK(head == 2 && kept && taken, "init_exclude = classifier.3: its %d tensors keep their initialisation, the rest "
          "come from the file (%d, %d)", head, kept, taken);
    CHECK(memcmp(source->buffer_data, loaded->buffer_data, source->num_buffer_floats * sizeof(float)) == 0 &&
              loaded->num_batches_tracked == source->num_batches_tracked,
          "init_weights loads the running statistics and num_batches_tracked");
    /* "classifier" as a prefix of whole components: "classifier.3" does not exclude "classifier.30" and "class"
     * excludes nothing, so the file's tensors must all be there */
    bf_status s = bf_checkpoint_init_weights(file, "class", partial);
    CHECK(s == BF_OK, "a prefix that is not a whole name component excludes nothing: %s", s ? bf_last_error() : "ok");

    other = cfg;
    other.model.hidden = 24;
    bf_model *wider = fresh_model(&other, b);
    s = wider ? bf_checkpoint_init_weights(trained, "", wider) : BF_ERR_INTERNAL;
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "classifier.0.weight") && strstr(bf_last_error(), "shape"),
          "another hidden width is refused naming the tensor and its shape: %s", bf_last_error());
    s = wider ? bf_checkpoint_init_weights(trained, "classifier", wider) : BF_ERR_INTERNAL;
    CHECK(s == BF_OK, "... and loads with the classifier excluded: %s", s ? bf_last_error() : "ok");
    other.model.num_channels = 1; /* fewer convs: the file holds tensors this model lacks */
    bf_model *shallow = fresh_model(&other, b);
    s = shallow ? bf_checkpoint_init_weights(trained, "classifier", shallow) : BF_ERR_INTERNAL;
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "does not have"),
          "a file with tensors the model lacks is refused: %s", bf_last_error());
    other.model.num_channels = 3, other.model.channels[2] = 8; /* a conv more: a tensor the file lacks */
    bf_model *deeper = fresh_model(&other, b);
    s = deeper ? bf_checkpoint_init_weights(trained, "classifier", deeper) : BF_ERR_INTERNAL;
    const char *said = bf_last_error(), *key = strstr(said, "init_weights"), *advice = strstr(said, "init_exclude");
    CHECK(s == BF_ERR_CHECKPOINT && strstr(said, "has no tensor features.8.weight") && key &&
              !strstr(key + 1, "init_weights") && advice && !strstr(advice + 1, "init_exclude"),
          "a tensor the file lacks is refused naming it, the key and its advice once each (it was wrapped again as "
          "a shape mismatch): %s", said);
    bf_model_destroy(deeper);
    bf_model_destroy(shallow);
    bf_model_destroy(wider);
    bf_model_destroy(source);
    bf_model_destroy(init);
    bf_model_destroy(loaded);
    bf_model_destroy(partial);
    bf_backend_destroy(b);

    /* Through bf_train: trained weights, a learning rate of 1e-12 and frozen running statistics score
     * what the trained run scored, to 1e-5; from scratch the same run scores worse (the trained run
     * is 21 steps of a small CNN: its loss lies some 0.05-0.2 below chance, ln 4 = 1.386). */
    FILE *log = quiet_log();
    bf_config again;
    small_config(&again, "from_trained", BF_OPTIM_SGD);
    again.run.epochs = 1;
    again.optim.lr = 1e-12f;
    again.optim.weight_decay = 0;
    again.model.bn_momentum = 0; /* the running statistics stay the loaded ones */
    snprintf(again.model.init_weights, sizeof again.model.init_weights, "%s", trained);
    bf_train_options quiet = {.quiet = 1, .log = log};
    bf_train_result r, fresh;
    CHECK_OK(bf_train(&again, &quiet, &r));
    again.model.init_weights[0] = 0;
    snprintf(again.run.dir, sizeof again.run.dir, "%s/from_scratch", root);
    CHECK_OK(bf_train(&again, &quiet, &fresh));
    printf("init_weights run: test loss %.4f (from scratch with the same lr: %.4f)\n", r.final_eval.loss,
           fresh.final_eval.loss);
    CHECK(fabs(r.final_eval.loss - trained_loss) < 1e-5 && fresh.final_eval.loss > trained_loss + 0.03,
          "started from trained weights: test loss %.5f, the trained run's %.5f (from scratch: %.5f)", r.final_eval.loss,
          trained_loss, fresh.final_eval.loss);
    fclose(log);
}

/* keep_best: checkpoints/best holds the epoch whose evaluation (metrics.jsonl) had the highest top-1. */
static void test_keep_best(void) {
    FILE *log = quiet_log();
    bf_config cfg;
    small_config(&cfg, "best", BF_OPTIM_SGD);
    cfg.run.keep_best = 1;
    cfg.run.keep_checkpoints = 2;
    bf_train_options quiet = {.quiet = 1, .log = log};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &quiet, &r));
    /* Resumed for 2 more epochs at a learning rate that wrecks the network: those evaluations are
     * worse, so the best must stay among the first 3 (the resumed run starts from the best on disk). */
    cfg.run.epochs = 5;
    cfg.optim.lr = 5.0f;
    cfg.schedule.type = BF_SCHED_CONSTANT;
    bf_train_options resume = {.quiet = 1, .log = log, .resume = cfg.run.dir};
    CHECK_OK(bf_train(&cfg, &resume, &r));
    char path[600], line[2048];
    snprintf(path, sizeof path, "%s/metrics.jsonl", cfg.run.dir);
    FILE *f = fopen(path, "r");
    double best = -1;
    int best_epoch = -1, evals = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *e = strstr(line, "\"epoch\":"), *t = strstr(line, "\"top1\":");
        if (!strstr(line, "\"type\":\"eval\"") || !e || !t) continue;
        double top1 = atof(t + 7);
        evals++;
        if (top1 > best) best = top1, best_epoch = atoi(e + 8);
    }
    if (f) fclose(f);
    double stored = -1;
    CHECK_OK(bf_checkpoint_read_best_top1(cfg.run.dir, &stored));
    snprintf(path, sizeof path, "%s/checkpoints/best/state.safetensors", cfg.run.dir);
    bf_st_file *st = NULL;
    long epoch = -1;
    if (bf_safetensors_read(path, &st) == BF_OK) {
        const char *v = bf_safetensors_meta(st, "epoch");
        epoch = v ? atol(v) : -1;
        bf_safetensors_close(st);
    }
    printf("keep_best: %d evaluations, the best top-1 %.4f after epoch %d\n", evals, best, best_epoch);
    CHECK(best_epoch <= 3, "the wrecked epochs 4 and 5 should not be the best (got epoch %d)", best_epoch);
    CHECK(evals == 5 && fabs(stored - best) < 1e-6 && epoch == best_epoch,
          "checkpoints/best: top-1 %.6f after epoch %ld, metrics.jsonl's best %.6f after epoch %d (%d evaluations)",
          stored, epoch, best, best_epoch, evals);
    snprintf(path, sizeof path, "%s/checkpoints/latest", cfg.run.dir);
    char latest[64] = "";
    if ((f = fopen(path, "r"))) {
        if (!fgets(latest, sizeof latest, f)) latest[0] = 0;
        fclose(f);
    }
    CHECK(strncmp(latest, "epoch_0005", 10) == 0, "best leaves latest alone (%s)", latest);
    /* keep_checkpoints = 2: epochs 4 and 5 and best are what is left */
    snprintf(path, sizeof path, "%s/checkpoints", cfg.run.dir);
    DIR *d = opendir(path);
    char names[256] = "";
    for (struct dirent *e; d && (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.' && strcmp(e->d_name, "latest") != 0 && strlen(names) + strlen(e->d_name) + 2 < sizeof names)
            strcat(strcat(names, " "), e->d_name);
    if (d) closedir(d);
    CHECK(strstr(names, "epoch_0004") && strstr(names, "epoch_0005") && strstr(names, "best") &&
              !strstr(names, "epoch_0001") && !strstr(names, "epoch_0002") && !strstr(names, "epoch_0003"),
          "keep_checkpoints = 2 leaves epochs 4, 5 and best (found:%s)", names);
    /* ... counting checkpoints, not epochs: every 2nd epoch written, the newest 2 are epochs 4 and 6 */
    bf_config sparse;
    small_config(&sparse, "sparse", BF_OPTIM_SGD);
    sparse.run.epochs = 6;
    sparse.run.checkpoint_every = 2;
    sparse.run.keep_checkpoints = 2;
    CHECK_OK(bf_train(&sparse, &quiet, &r));
    const char *want[3] = {"epoch_0002", "epoch_0004", "epoch_0006"};
    int present[3];
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/checkpoints/%s", sparse.run.dir, want[k]);
        present[k] = access(path, F_OK) == 0;
    }
    CHECK(!present[0] && present[1] && present[2], "checkpoint_every = 2, keep_checkpoints = 2: epochs 4 and 6 stay "
          "(2: %d, 4: %d, 6: %d)", present[0], present[1], present[2]);
    bf_config other;
    small_config(&other, "no_best", BF_OPTIM_SGD);
    other.run.epochs = 1;
    CHECK_OK(bf_train(&other, &quiet, &r));
    double none = 0;
    CHECK(bf_checkpoint_read_best_top1(other.run.dir, &none) == BF_OK && none < 0,
          "without keep_best there is no checkpoints/best (top-1 %g)", none);
    fclose(log);
}

static void test_weights_file(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/full_sgd/checkpoints/epoch_0003/model.safetensors", root);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(path, &f));
    if (!f) return;
    const bf_st_tensor *w = bf_safetensors_find(f, "features.0.weight");
    CHECK(w && w->ndim == 4 && w->shape[0] == 4 && w->shape[1] == 3 && w->shape[2] == 3, "features.0.weight [4,3,3,3]");
    const bf_st_tensor *rv = bf_safetensors_find(f, "features.1.running_var");
    CHECK(rv && rv->dtype == BF_DTYPE_F32 && rv->shape[0] == 4, "features.1.running_var [4]");
    const bf_st_tensor *nb = bf_safetensors_find(f, "features.1.num_batches_tracked");
    CHECK(nb && nb->dtype == BF_DTYPE_I64 && nb->ndim == 0 && *(const int64_t *)nb->data == 21,
          "features.1.num_batches_tracked is an int64 scalar counting 21 training batches");
    CHECK(bf_safetensors_find(f, "classifier.0.weight") && bf_safetensors_find(f, "classifier.3.bias"),
          "classifier.0 (hidden) and classifier.3 (output) are present");
    /* running_var moved away from its initial 1 */
    int moved = 0;
    for (int i = 0; rv && i < 4; i++) moved += ((const float *)rv->data)[i] != 1.0f;
    CHECK(moved > 0, "batch-norm running statistics are saved");
    bf_safetensors_close(f);
}

static bf_status load_into_fresh_model(const char *dir, bf_config *cfg) {
    bf_backend *b = NULL;
    bf_dataset *d = NULL;
    bf_model *m = NULL;
    bf_optimizer *opt = NULL;
    bf_status s = bf_backend_create_cpu(1, &b);
    if (s == BF_OK) s = bf_dataset_open(&cfg->data, cfg->run.seed, BF_SPLIT_TRAIN, &d);
    if (s == BF_OK) s = bf_run_build_model(cfg, b, d, 0, &m);
    if (s == BF_OK) s = bf_optimizer_create(b, &cfg->optim, m->num_param_floats, &opt);
    if (s == BF_OK) s = bf_checkpoint_load_model(dir, m);
    bf_train_state st;
    if (s == BF_OK) s = bf_checkpoint_load_state(dir, cfg, m, opt, &st);
    if (opt) bf_optimizer_destroy(b, opt);
    bf_model_destroy(m);
    bf_dataset_free(d);
    if (b) bf_backend_destroy(b);
    return s;
}

static void copy_file(const char *from, const char *to) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s'/*.safetensors '%s'/", to, from, to);
    CHECK(system(cmd) == 0, "%s", cmd);
}

/* Rewrites dir/state.safetensors with metadata `key` set to `value` (its checksum valid: an edit
 * the checksum cannot catch, as a file written by another program would be). */
static void rewrite_state_meta(const char *dir, const char *key, const char *value) {
    static const char *keys[] = {"epoch", "step", "seed", "optimizer", "optimizer_steps", "num_params", "arch", "rng",
                                 "data_order", "batch_in_epoch", "batches_per_epoch", "schedule_start", "eval_top1",
                                 "config", "lr_schedule", "data", "network", "learning", "model_checksum"};
    char path[700];
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(path, &f));
    if (!f) return;
    bf_st_meta meta[32];
    int nm = 0, nt = bf_safetensors_count(f);
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const char *v = strcmp(keys[k], key) == 0 ? value : bf_safetensors_meta(f, keys[k]);
        if (!v) continue;
        snprintf(meta[nm].key, sizeof meta[nm].key, "%s", keys[k]);
        snprintf(meta[nm].value, sizeof meta[nm].value, "%s", v);
        nm++;
    }
    bf_st_tensor t[2];
    for (int i = 0; i < nt && i < 2; i++) t[i] = *bf_safetensors_at(f, i);
    char tmp[720];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    CHECK_OK(bf_safetensors_write(tmp, t, nt < 2 ? nt : 2, meta, nm));
    bf_safetensors_close(f);
    CHECK(rename(tmp, path) == 0, "rename %s", tmp);
}

static void test_refusals(void) {
    bf_config cfg;
    small_config(&cfg, "full_sgd", BF_OPTIM_SGD);
    char good[600], bad[600], path[700];
    snprintf(good, sizeof good, "%s/full_sgd/checkpoints/epoch_0002", root);
    CHECK_OK(load_into_fresh_model(good, &cfg));

    /* one flipped byte in the weights: checksum */
    snprintf(bad, sizeof bad, "%s/corrupt", root);
    copy_file(good, bad);
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    FILE *f = fopen(path, "r+b");
    fseek(f, -10, SEEK_END);
    int c = fgetc(f);
    fseek(f, -10, SEEK_END);
    fputc(c ^ 0x40, f);
    fclose(f);
    bf_status s = load_into_fresh_model(bad, &cfg);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "checksum"), "corrupt weights refused: %s", bf_last_error());

    /* the training position edited in place in the state file's header: the checksum covers it */
    snprintf(bad, sizeof bad, "%s/edited_step", root);
    copy_file(good, bad);
    snprintf(path, sizeof path, "%s/state.safetensors", bad);
    size_t size = 0;
    char *bytes = bf_test_read_file(path, &size);
    char *step = bytes ? strstr(bytes + 8, "\"epoch\":\"2\"") : NULL;
    CHECK(step != NULL, "the state file of epoch 2 says \"epoch\":\"2\"");
    if (step) {
        step[9] = '1';
        f = fopen(path, "wb");
        fwrite(bytes, 1, size, f);
        fclose(f);
        s = load_into_fresh_model(bad, &cfg);
        CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "checksum mismatch"), "an edited epoch is refused: %s",
              bf_last_error());
    }
    free(bytes);

    /* epoch 1's weights beside epoch 2's state: each file intact, the pair mixed */
    snprintf(bad, sizeof bad, "%s/mixed", root);
    copy_file(good, bad);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "cp '%s/full_sgd/checkpoints/epoch_0001/model.safetensors' '%s/'", root, bad);
    CHECK(system(cmd) == 0, "%s", cmd);
    s = load_into_fresh_model(bad, &cfg);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "different checkpoints"),
          "weights and state of two checkpoints refused: %s", bf_last_error());

    /* a training position no run has: refused naming the key, not taken as it is (a negative epoch
     * failed later in the loader without naming the file, atoi read "abc" as 0, sscanf's %d and a
     * step of LONG_MAX overflowed) */
    static const struct { const char *key, *value; } positions[] = {
        {"epoch", "-1"},        {"epoch", "4294967297"}, {"step", "-5"},
        {"optimizer_steps", "9223372036854775807"},      {"batches_per_epoch", "abc"},
        {"batch_in_epoch", "-2"}, {"schedule_start", "0 99999999999"}, {"schedule_start", "1"}};
    for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
        snprintf(bad, sizeof bad, "%s/position_%zu", root, i);
        copy_file(good, bad);
        rewrite_state_meta(bad, positions[i].key, positions[i].value);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", positions[i].key);
        s = load_into_fresh_model(bad, &cfg);
        CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "state.safetensors") && strstr(bf_last_error(), quoted),
              "metadata %s = \"%s\" refused naming the file and the key (got %s: %s)", positions[i].key,
              positions[i].value, bf_status_name(s), s == BF_OK ? "" : bf_last_error());
    }
    /* the same rewrite with the value the file had loads: the refusals are the values' */
    snprintf(bad, sizeof bad, "%s/position_same", root);
    copy_file(good, bad);
    rewrite_state_meta(bad, "epoch", "2");
    CHECK_OK(load_into_fresh_model(bad, &cfg));

    /* truncated optimiser state */
    snprintf(bad, sizeof bad, "%s/truncated", root);
    copy_file(good, bad);
    snprintf(path, sizeof path, "%s/state.safetensors", bad);
    CHECK(truncate(path, 100) == 0, "truncate");
    s = load_into_fresh_model(bad, &cfg);
    CHECK(s != BF_OK && strstr(bf_last_error(), "state.safetensors"), "truncated state refused: %s", bf_last_error());

    /* another architecture */
    bf_config other = cfg;
    other.model.channels[1] = 16;
    s = load_into_fresh_model(good, &other);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "shape"), "checkpoint of another model refused: %s", bf_last_error());

    /* another optimiser, another seed */
    other = cfg;
    other.optim.optimizer = BF_OPTIM_ADAMW;
    s = load_into_fresh_model(good, &other);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "optimizer"), "optimizer mismatch refused: %s", bf_last_error());
    /* Adam's state has AdamW's two moments, but the updates differ (the weight decay coupled or not) */
    char adam_dir[600];
    snprintf(adam_dir, sizeof adam_dir, "%s/full_adam/checkpoints/epoch_0002", root);
    small_config(&other, "full_adam", BF_OPTIM_ADAM);
    CHECK_OK(load_into_fresh_model(adam_dir, &other));
    other.optim.optimizer = BF_OPTIM_ADAMW;
    s = load_into_fresh_model(adam_dir, &other);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "optimizer \"adam\", the config uses \"adamw\""),
          "an adam checkpoint resumed as adamw refused: %s", bf_last_error());
    other = cfg;
    other.run.seed = 99;
    s = load_into_fresh_model(good, &other);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "seed"), "seed mismatch refused: %s", bf_last_error());

    /* a path that is no checkpoint */
    char dir[BF_PATH_MAX];
    s = bf_checkpoint_resolve(root, dir);
    CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "not a checkpoint"), "non-checkpoint refused: %s", bf_last_error());
}

/* checkpoints/best's eval_top1 is what a resumed keep_best run must beat: a value that is no top-1
 * (strtod took "nan" and "abc" as they came: NaN never lost, "abc" read as 0 always did) refuses
 * the resume naming the file and the key; a valid one edited in resumes, and so does a bad one
 * without keep_best, which does not read it. Uses test_keep_best's run. */
static void test_best_top1_refused(void) {
    static const char *values[] = {"nan", "abc", "inf", "1.5", "-0.25", "0.5x", ""};
    FILE *log = quiet_log();
    char cmd[1400], best[600];
    for (size_t i = 0; i <= sizeof values / sizeof values[0]; i++) {
        const char *value = i < sizeof values / sizeof values[0] ? values[i] : "0.25"; /* the last: valid */
        char name[64];
        snprintf(name, sizeof name, "bad_best_%zu", i);
        bf_config cfg; /* test_keep_best's resumed run, one epoch further */
        small_config(&cfg, name, BF_OPTIM_SGD);
        cfg.run.keep_best = 1;
        cfg.run.keep_checkpoints = 2;
        cfg.run.epochs = 6;
        cfg.optim.lr = 5.0f;
        cfg.schedule.type = BF_SCHED_CONSTANT;
        snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s/best' '%s'", cfg.run.dir, root, cfg.run.dir);
        CHECK(system(cmd) == 0, "%s", cmd);
        snprintf(best, sizeof best, "%s/checkpoints/best", cfg.run.dir);
        rewrite_state_meta(best, "eval_top1", value);
        double top1 = -2;
        bf_status s = bf_checkpoint_read_best_top1(cfg.run.dir, &top1);
        bf_train_options resume = {.quiet = 1, .log = log, .resume = cfg.run.dir};
        bf_train_result r;
        if (i == sizeof values / sizeof values[0]) {
            CHECK(s == BF_OK && top1 == 0.25, "eval_top1 = 0.25 read back (%s, %g)", bf_status_name(s), top1);
            CHECK_OK(bf_train(&cfg, &resume, &r));
            continue;
        }
        CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "best/state.safetensors") &&
                  strstr(bf_last_error(), "\"eval_top1\""),
              "eval_top1 = \"%s\" refused naming the file and the key (%s: %s)", value, bf_status_name(s),
              s == BF_OK ? "" : bf_last_error());
        CHECK(top1 == -1, "eval_top1 = \"%s\": no best to keep (%g)", value, top1);
        s = bf_train(&cfg, &resume, &r);
        CHECK(s == BF_ERR_CHECKPOINT && strstr(bf_last_error(), "best/state.safetensors") &&
                  strstr(bf_last_error(), "\"eval_top1\""),
              "a keep_best resume under eval_top1 = \"%s\" refused naming the file and the key (%s: %s)", value,
              bf_status_name(s), s == BF_OK ? "" : bf_last_error());
        if (i == 0) { /* without keep_best the best is not read: the resume goes on */
            cfg.run.keep_best = 0;
            s = bf_train(&cfg, &resume, &r);
            CHECK(s == BF_OK, "eval_top1 = \"%s\" without keep_best: resumed (%s: %s)", value, bf_status_name(s),
                  s == BF_OK ? "" : bf_last_error());
        }
    }
    fclose(log);
}

/* The momentum buffer a step checkpoint holds (NULL when unreadable, CHECKed). */
static float *momentum_of(const char *checkpoint, size_t *n) {
    char path[BF_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/state.safetensors", checkpoint);
    bf_st_file *f = NULL;
    CHECK_OK(bf_safetensors_read(path, &f));
    const bf_st_tensor *t = f ? bf_safetensors_find(f, "optimizer.momentum") : NULL;
    CHECK(t != NULL, "%s holds optimizer.momentum", path);
    float *m = NULL;
    if (t) {
        *n = t->nbytes / sizeof(float);
        m = malloc(t->nbytes);
        memcpy(m, t->data, t->nbytes);
    }
    if (f) bf_safetensors_close(f);
    return m;
}

/* [run] resume_optimizer = restart: the optimiser's state starts empty at the resume (the V1
 * reference's resume restored the weights alone). One SGD step from full_sgd's epoch 1 either way,
 * on the same weights and batch, so the same gradient g: continued, the buffer is 0.9 m + g with m
 * the checkpoint's; restarted, g alone. Their difference is 0.9 m. */
static void test_optimizer_restart(void) {
    char from[512];
    snprintf(from, sizeof from, "%s/full_sgd/checkpoints/epoch_0001", root);
    float *buffers[2] = {NULL, NULL};
    size_t n[3] = {0, 0, 0};
    FILE *quiet = quiet_log();
    for (int restart = 0; restart < 2; restart++) {
        bf_config cfg;
        small_config(&cfg, restart ? "optimizer_restarted" : "optimizer_continued", BF_OPTIM_SGD);
        cfg.run.resume_optimizer = restart ? BF_RESUME_SCHEDULE_RESTART : BF_RESUME_SCHEDULE_CONTINUE;
        atomic_int stop = 1; /* one step after the resume, then a step checkpoint */
        bf_train_options resume = {.resume = from, .quiet = 1, .log = quiet, .stop = &stop};
        bf_train_result r;
        CHECK_OK(bf_train(&cfg, &resume, &r));
        CHECK(r.interrupted, "the resumed run stopped after a step");
        buffers[restart] = momentum_of(r.checkpoint, &n[restart]);
    }
    float *saved = momentum_of(from, &n[2]);
    if (buffers[0] && buffers[1] && saved && n[0] == n[1] && n[1] == n[2]) {
        double worst = 0, largest = 0;
        for (size_t i = 0; i < n[2]; i++) {
            worst = fmax(worst, fabs((double)buffers[0][i] - buffers[1][i] - 0.9 * saved[i]));
            largest = fmax(largest, fabs(0.9 * saved[i]));
        }
        printf("resume_optimizer = restart: continued - restarted momentum = 0.9 x the checkpoint's to %.3g "
               "(largest %.3g)\n", worst, largest);
        CHECK(largest > 1e-3 && worst <= 1e-6 * largest + 1e-9,
              "restarted, the momentum holds the new gradient alone (%.3g off 0.9 m)", worst);
    }
    free(buffers[0]), free(buffers[1]), free(saved);
    fclose(quiet);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/bioflex_test_checkpoint_XXXXXX");
    if (!mkdtemp(root)) return 1;
    test_exact_resume(BF_OPTIM_SGD, "sgd");
    test_exact_resume(BF_OPTIM_ADAMW, "adamw");
    test_exact_resume(BF_OPTIM_ADAM, "adam");
    test_thread_count();
    test_schedule_change_noted();
    test_schedule_restart();
    test_optimizer_restart();
    test_data_change_on_resume();
    test_network_change_on_resume();
    test_data_phrase();
    test_stop_every_step();
    test_init_weights();
    test_inert_logits_bn();
    test_unlearned_threshold_import();
    test_keep_best();
    test_weights_file();
    test_refusals();
    test_best_top1_refused();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return bf_test_finish();
}

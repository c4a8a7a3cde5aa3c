/* test_butd_train.c - bioflex-train's BU-TD path end to end (bf_train -> butd_train.c): a small fc
 * BU-TD net learns the procedural dataset with Counter-Hebb (separate weights) and with backprop,
 * well above chance, a binary version learns with one logit and BCE ([butd] loss = bce), [run]
 * eval_train logs the training split's score, the checkpoint's over the training images without
 * augmentation (recomputed here), and a guided config on a single-task dataset is refused with a
 * message. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/butd.h"
#include "bioflex/checkpoint.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "testutil.h"

static char run_dir[] = "/tmp/bioflex_test_butd_train_XXXXXX";

static void configure(bf_config *cfg, const char *learning, const char *weights) {
    bf_config_defaults(cfg);
    char dir[64];
    snprintf(dir, sizeof dir, "run.dir=%s", run_dir);
    CHECK_OK(bf_config_set(cfg, dir));
    const char *sets[] = {"run.epochs=3", "run.threads=1", "run.device=cpu",
                          "data.dataset=procedural", "data.procedural_size=8", "data.procedural_channels=1",
                          "data.procedural_train=1000", "data.procedural_test=500", "data.batch_size=20",
                          "optim.optimizer=adamw", "optim.lr=0.002", "optim.weight_decay=0", "butd.network=fc",
                          "butd.hidden=64"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) CHECK_OK(bf_config_set(cfg, sets[i]));
    char a[64], b[64];
    snprintf(a, sizeof a, "butd.learning=%s", learning);
    snprintf(b, sizeof b, "butd.weights=%s", weights);
    CHECK_OK(bf_config_set(cfg, a));
    CHECK_OK(bf_config_set(cfg, b));
}

/* The last "train" evaluation's top-1 in the run's metrics.jsonl (-1 when none). */
static double logged_train_top1(const char *dir, int *samples) {
    char path[300], line[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    double top1 = -1;
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "\"split\":\"train\"") ? strstr(line, "\"top1\":") : NULL;
        const char *n = strstr(line, "\"samples\":");
        if (at && n) top1 = strtod(at + 7, NULL), *samples = atoi(n + 10);
    }
    if (f) fclose(f);
    return top1;
}

/* [run] eval_train: the checkpoint's net over the training split, batch by batch, in evaluation mode. */
static void test_eval_train(void) {
    bf_config cfg;
    configure(&cfg, "counter_hebb", "shared");
    CHECK_OK(bf_config_set(&cfg, "run.epochs=1"));
    CHECK_OK(bf_config_set(&cfg, "run.eval_train=true"));
    CHECK_OK(bf_config_set(&cfg, "data.augment_flip=true")); /* training batches flip; the scored split must not */
    bf_train_options opt = {.quiet = 1};
    bf_train_result res;
    CHECK_OK(bf_train(&cfg, &opt, &res));
    int logged_samples = 0;
    const double logged = logged_train_top1(run_dir, &logged_samples);
    bf_dataset *train = NULL;
    bf_backend *b = NULL;
    bf_butd_net *net = NULL;
    bf_loader *loader = NULL;
    char weights[BF_PATH_MAX];
    CHECK_OK(bf_dataset_open(&cfg.data, cfg.run.seed, BF_SPLIT_TRAIN, &train));
    CHECK_OK(bf_backend_create_cpu(1, &b));
    CHECK_OK(bf_checkpoint_weights_file(res.checkpoint, weights));
    if (train && b) CHECK_OK(bf_butd_build(b, &cfg.butd, 1, 8, 8, cfg.data.batch_size, train->num_classes, 0, cfg.run.seed, &net));
    if (net) CHECK_OK(bf_butd_load(net, weights));
    bf_loader_options o = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    if (train) CHECK_OK(bf_loader_create(train, &o, &loader));
    int correct = 0, total = 0;
    float *x = b ? bf_test_alloc(b, (size_t)cfg.data.batch_size * 64) : NULL;
    if (net && loader && x) {
        bf_butd_set_training(net, 0);
        CHECK_OK(bf_loader_start_epoch(loader, 1, 0));
        bf_batch *batch = NULL;
        while (bf_loader_next(loader, &batch, NULL) == BF_OK && batch) {
            const float *logits = NULL;
            const int n = batch->n, k = net->num_classes;
            CHECK_OK(bf_to_device(b, x, batch->images, (size_t)n * 64 * sizeof(float)));
            CHECK_OK(bf_butd_set_batch(net, n));
            CHECK_OK(bf_butd_forward(net, x, &logits));
            for (int i = 0; i < n; i++) { /* the CPU backend: logits are host memory */
                int best = 0;
                for (int c = 1; c < k; c++) best = logits[i * k + c] > logits[i * k + best] ? c : best;
                correct += best == batch->labels[i];
            }
            total += n;
            bf_loader_release(loader, batch);
        }
    }
    printf("eval_train (BU-TD): logged train top-1 %.6f over %d images, recomputed %d of %d\n", logged, logged_samples,
           correct, total);
    CHECK(logged_samples == 1000 && total == 1000 && fabs(logged - (double)correct / total) < 1e-6,
          "the logged train top-1 %.6f is the checkpoint's over the 1000 training images (%d correct)", logged, correct);
    bf_free(b, x);
    bf_loader_destroy(loader);
    bf_butd_destroy(net);
    if (b) bf_backend_destroy(b);
    bf_dataset_free(train);
}

int main(void) {
    if (!mkdtemp(run_dir)) bf_test_skip("cannot make a temporary directory");
    test_eval_train();
    static const char *runs[][2] = {{"counter_hebb", "separate"}, {"counter_hebb", "shared"}, {"backprop", "separate"}};
    for (int i = 0; i < 3; i++) {
        bf_config cfg;
        configure(&cfg, runs[i][0], runs[i][1]);
        bf_train_options opt = {.quiet = 1};
        bf_train_result res;
        CHECK_OK(bf_train(&cfg, &opt, &res));
        CHECK(res.epochs_done == 3 && res.final_eval.samples > 0, "%s/%s: ran %d epochs", runs[i][0], runs[i][1],
              res.epochs_done);
        printf("%s, %s weights: test accuracy %.3f after 3 epochs\n", runs[i][0], runs[i][1], res.final_eval.top1);
        bf_st_file *f = NULL;
        CHECK_OK(bf_safetensors_read(res.checkpoint, &f));
        if (f) {
            CHECK(bf_safetensors_find(f, "core_net.0.weight") && bf_safetensors_find(f, "head.bias"),
                  "%s: the saved weights hold core_net.0.weight and head.bias", res.checkpoint);
            CHECK((bf_safetensors_find(f, "core_net.0.back_weight") != NULL) == (strcmp(runs[i][1], "separate") == 0),
                  "%s: back_weight saved exactly for separate weights", res.checkpoint);
            bf_safetensors_close(f);
        }
        CHECK(res.final_eval.top1 > 0.5, "%s/%s: test accuracy %.3f > 0.5 (chance 0.1)", runs[i][0], runs[i][1],
              res.final_eval.top1);
    }
    { /* backprop gives a separate B no gradient: weight decay must leave it as initialised, as
       * PyTorch's optimisers skip a parameter without a gradient */
        bf_config cfg;
        configure(&cfg, "backprop", "separate");
        CHECK_OK(bf_config_set(&cfg, "optim.weight_decay=0.5"));
        CHECK_OK(bf_config_set(&cfg, "run.epochs=1"));
        bf_train_options opt = {.quiet = 1};
        bf_train_result res;
        CHECK_OK(bf_train(&cfg, &opt, &res));
        bf_st_file *f = NULL;
        CHECK_OK(bf_safetensors_read(res.checkpoint, &f));
        const bf_st_tensor *saved = f ? bf_safetensors_find(f, "core_net.0.back_weight") : NULL;
        const bf_st_tensor *head = f ? bf_safetensors_find(f, "head.weight") : NULL;
        bf_backend *b = NULL;
        bf_butd_net *fresh = NULL;
        CHECK_OK(bf_backend_create_cpu(1, &b));
        if (saved && head && b)
            CHECK_OK(bf_butd_build(b, &cfg.butd, 1, 8, 8, cfg.data.batch_size, (int)head->shape[0], 0, cfg.run.seed,
                                   &fresh));
        int p0 = -1;
        for (int p = 0; fresh && p < fresh->num_params; p++)
            if (!strcmp(fresh->params[p].name, "core_net.0.back_weight")) p0 = p;
        CHECK(p0 >= 0 && saved->nbytes == fresh->params[p0].count * sizeof(float) &&
                  memcmp(saved->data, fresh->param_data + fresh->params[p0].offset, saved->nbytes) == 0,
              "backprop, separate weights, weight decay 0.5: B ends as initialised");
        bf_butd_destroy(fresh);
        if (b) bf_backend_destroy(b);
        if (f) bf_safetensors_close(f);
    }
    { /* two classes, one logit, sigmoid BCE: the loss the per-task binary heads use */
        bf_config cfg;
        configure(&cfg, "counter_hebb", "shared");
        CHECK_OK(bf_config_set(&cfg, "data.procedural_classes=2"));
        CHECK_OK(bf_config_set(&cfg, "butd.loss=bce"));
        bf_train_options opt = {.quiet = 1};
        bf_train_result res;
        CHECK_OK(bf_train(&cfg, &opt, &res));
        printf("counter_hebb, shared weights, 2 classes with BCE: test accuracy %.3f, loss %.3f\n",
               res.final_eval.top1, res.final_eval.loss);
        CHECK(res.final_eval.top1 > 0.8, "bce: test accuracy %.3f > 0.8 (chance 0.5)", res.final_eval.top1);
        CHECK(res.final_eval.loss < 0.6, "bce: test loss %.3f < log 2 = 0.693 (chance)", res.final_eval.loss);
        bf_st_file *f = NULL;
        CHECK_OK(bf_safetensors_read(res.checkpoint, &f));
        const bf_st_tensor *head = f ? bf_safetensors_find(f, "head.weight") : NULL;
        CHECK(head && head->shape[0] == 1, "bce: the head has one output");
        if (f) bf_safetensors_close(f);
    }
    bf_config cfg;
    configure(&cfg, "counter_hebb", "shared");
    CHECK_OK(bf_config_set(&cfg, "butd.guided=true"));
    bf_train_options opt = {.quiet = 1};
    bf_train_result res;
    bf_status s = bf_train(&cfg, &opt, &res);
    CHECK(s == BF_ERR_CONFIG && strstr(bf_last_error(), "multi-task") != NULL,
          "guided on a single-task dataset refused: %s", bf_last_error());
    bf_test_remove_dir_if_passed(run_dir);
    return bf_test_finish();
}

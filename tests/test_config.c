/* test_config.c - the INI configuration (src/host/config.c): defaults, a full file, every kind of
 * refused value with its file:line message, --set overrides, cross-key validation, and the
 * print -> load round trip. Each case writes a small INI file under /tmp. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bioflex/config.h"
#include "testutil.h"

#ifndef BIOFLEX_SOURCE_DIR
#define BIOFLEX_SOURCE_DIR "."
#endif

/* Every key the configuration must have, as "section.key" (the list config.h documents). */
static const char *const all_keys[] = {
    "run.dir", "run.seed", "run.device", "run.gpus", "run.epochs", "run.log_interval",
    "run.eval_every", "run.checkpoint_every", "run.precision", "run.threads",
    "data.dataset", "data.path", "data.batch_size", "data.eval_batch_size", "data.train_limit",
    "data.test_limit", "data.loader_threads", "data.prefetch", "data.shuffle", "data.augment_flip",
    "data.augment_crop_pad", "data.normalize", "data.procedural_classes", "data.procedural_size",
    "data.procedural_channels", "data.procedural_train", "data.procedural_test",
    "model.arch", "model.num_classes", "model.dropout", "model.channels", "model.hidden",
    "model.batchnorm", "model.bn_momentum", "model.bn_eps",
    "optim.optimizer", "optim.lr", "optim.momentum", "optim.nesterov", "optim.weight_decay",
    "optim.beta1", "optim.beta2", "optim.eps", "optim.grad_clip_norm", "optim.label_smoothing",
    "schedule.type", "schedule.unit", "schedule.step_size", "schedule.gamma", "schedule.milestones",
    "schedule.eta_min", "schedule.warmup", "schedule.warmup_start_factor",
};
#define NUM_ALL_KEYS (sizeof all_keys / sizeof all_keys[0])

/* Writes `text` to a new temporary file and puts its name in path (at least 64 bytes). */
static int write_temp(const char *text, char *path) {
    strcpy(path, "/tmp/bf_test_config_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    FILE *f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        return 0;
    }
    fputs(text, f);
    fclose(f);
    return 1;
}

/* Loads `text` as a file; the status, and the message in `message`. */
static bf_status load_text(const char *text, bf_config *cfg, char *path, char *message, size_t size) {
    if (!write_temp(text, path)) {
        snprintf(message, size, "cannot write a temporary file");
        return BF_ERR_IO;
    }
    bf_status st = bf_config_load(path, cfg);
    snprintf(message, size, "%s", bf_last_error());
    unlink(path);
    return st;
}

/* Checks that `text` is refused with BF_ERR_CONFIG and a message that starts with "file:line:"
 * and contains every one of the NULL-terminated `needles`. */
static void expect_refused(const char *what, const char *text, int line, ...) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_config before = cfg;
    char path[64], message[2048], where[128];
    bf_status st = load_text(text, &cfg, path, message, sizeof message);
    CHECK(st == BF_ERR_CONFIG, "%s: status %s (%s)", what, bf_status_name(st), message);
    snprintf(where, sizeof where, "%s:%d: ", path, line);
    CHECK(strncmp(message, where, strlen(where)) == 0, "%s: message should start with \"%s\": %s", what, where,
          message);
    va_list ap;
    va_start(ap, line);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        CHECK(strstr(message, needle) != NULL, "%s: message should contain \"%s\": %s", what, needle, message);
    va_end(ap);
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0, "%s: a refused file must leave the config untouched", what);
}

/* Checks that a --set is refused with a message containing every one of the `needles`. */
static void expect_set_refused(const char *assignment, ...) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_config before = cfg;
    bf_status st = bf_config_set(&cfg, assignment);
    const char *message = bf_last_error();
    CHECK(st == BF_ERR_CONFIG, "--set %s: status %s (%s)", assignment, bf_status_name(st), message);
    va_list ap;
    va_start(ap, assignment);
    for (const char *needle = va_arg(ap, const char *); needle; needle = va_arg(ap, const char *))
        CHECK(strstr(message, needle) != NULL, "--set %s: message should contain \"%s\": %s", assignment, needle,
              message);
    va_end(ap);
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0, "--set %s: a refused override must change nothing", assignment);
}

static void test_defaults(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_validate(&cfg));
    CHECK(strcmp(cfg.source, "") == 0, "defaults have no source");
    CHECK(strcmp(cfg.run.dir, "runs/default") == 0, "run.dir default: %s", cfg.run.dir);
    CHECK(cfg.run.seed == 1 && cfg.run.device == BF_DEVICE_AUTO && cfg.run.gpus == 1 && cfg.run.epochs == 10,
          "run defaults");
    CHECK(cfg.run.log_interval == 50 && cfg.run.eval_every == 1 && cfg.run.checkpoint_every == 1 &&
              cfg.run.precision == BF_PRECISION_FP32 && cfg.run.threads == 0,
          "run defaults (2)");
    CHECK(cfg.data.dataset == BF_DATASET_FASHION_MNIST && cfg.data.path[0] == '\0' && cfg.data.batch_size == 128 &&
              cfg.data.eval_batch_size == 0 && cfg.data.train_limit == 0 && cfg.data.test_limit == 0,
          "data defaults");
    CHECK(cfg.data.loader_threads == 2 && cfg.data.prefetch == 4 && cfg.data.shuffle == 1 &&
              cfg.data.augment_flip == 0 && cfg.data.augment_crop_pad == 0 && cfg.data.normalize == 1,
          "data defaults (2)");
    CHECK(cfg.data.procedural_classes == 10 && cfg.data.procedural_size == 32 && cfg.data.procedural_channels == 3 &&
              cfg.data.procedural_train == 5000 && cfg.data.procedural_test == 1000,
          "procedural defaults");
    CHECK(cfg.model.arch == BF_ARCH_CNN && cfg.model.num_classes == 0 && cfg.model.dropout == 0.5f &&
              cfg.model.num_channels == 2 && cfg.model.channels[0] == 32 && cfg.model.channels[1] == 64 &&
              cfg.model.hidden == 128 && cfg.model.batchnorm == 1 && cfg.model.bn_momentum == 0.1f &&
              cfg.model.bn_eps == 1e-5f,
          "model defaults");
    CHECK(cfg.optim.optimizer == BF_OPTIM_SGD && cfg.optim.lr == 0.1f && cfg.optim.momentum == 0.9f &&
              cfg.optim.nesterov == 0 && cfg.optim.weight_decay == 0 && cfg.optim.beta1 == 0.9f &&
              cfg.optim.beta2 == 0.999f && cfg.optim.eps == 1e-8f && cfg.optim.grad_clip_norm == 0 &&
              cfg.optim.label_smoothing == 0,
          "optim defaults");
    CHECK(cfg.schedule.type == BF_SCHED_CONSTANT && cfg.schedule.unit == BF_SCHED_UNIT_EPOCH &&
              cfg.schedule.step_size == 30 && cfg.schedule.gamma == 0.1f && cfg.schedule.num_milestones == 0 &&
              cfg.schedule.eta_min == 0 && cfg.schedule.warmup == 0 && cfg.schedule.warmup_start_factor == 0.1f,
          "schedule defaults");
    CHECK(strcmp(bf_dataset_name(BF_DATASET_CIFAR10), "cifar10") == 0, "dataset name");
    CHECK(strcmp(bf_dataset_name(BF_DATASET_FASHION_MNIST), "fashion_mnist") == 0, "dataset name");
    CHECK(strcmp(bf_arch_name(BF_ARCH_RESNET50), "resnet50") == 0, "arch name");
    CHECK(strcmp(bf_arch_name(BF_ARCH_VGG11), "vgg11") == 0, "arch name");
}

/* A file that sets every key to a value other than its default. */
static const char full_file[] =
    "; a full configuration\n"
    "# with both comment styles\n"
    "[run]\n"
    "dir = /tmp/some run dir\n"
    "seed = 12345678901\n"
    "device = cuda\n"
    "gpus = 4\n"
    "epochs = 90\n"
    "log_interval = 7\n"
    "eval_every = 0\n"
    "checkpoint_every = 5\n"
    "precision = tf32\n"
    "threads = 3   ; inline comment\n"
    "\n"
    "[data]\n"
    "dataset = procedural\n"
    "path = /data/x\n"
    "batch_size = 256\n"
    "eval_batch_size = 1000\n"
    "train_limit = 600\n"
    "test_limit = 100\n"
    "loader_threads = 8\n"
    "prefetch = 16\n"
    "shuffle = off\n"
    "augment_flip = Yes\n"
    "augment_crop_pad = 4\n"
    "normalize = 0\n"
    "procedural_classes = 100\n"
    "procedural_size = 64\n"
    "procedural_channels = 1\n"
    "procedural_train = 123\n"
    "procedural_test = 45\n"
    "[model]\n"
    "arch = resnet18\n"
    "num_classes = 200\n"
    "dropout = 0\n"
    "channels = 16, 32 ,64,128\n"
    "hidden = 0\n"
    "batchnorm = false\n"
    "bn_momentum = 1\n"
    "bn_eps = 1e-3\n"
    "[optim]\n"
    "optimizer = adamw\n"
    "lr = 3e-4\n"
    "momentum = 0\n"
    "nesterov = FALSE\n"
    "weight_decay = 0.05\n"
    "beta1 = 0.8\n"
    "beta2 = 0.99\n"
    "eps = 1e-6\n"
    "grad_clip_norm = 1.5\n"
    "label_smoothing = 0.1\n"
    "[schedule]\n"
    "type = multistep\n"
    "unit = step\n"
    "step_size = 1\n"
    "gamma = 1\n"
    "milestones = 100,200, 300\n"
    "eta_min = 1e-5\n"
    "warmup = 500\n"
    "warmup_start_factor = 0.01\n";

/* test_full_file's keys that its other keys leave unread, put back to their defaults one by one */
static void reset_channels(bf_config *c, const bf_config *d) {
    memcpy(c->model.channels, d->model.channels, sizeof c->model.channels);
    c->model.num_channels = d->model.num_channels;
}
static void reset_hidden(bf_config *c, const bf_config *d) { c->model.hidden = d->model.hidden; }
static void reset_batchnorm(bf_config *c, const bf_config *d) { c->model.batchnorm = d->model.batchnorm; }
static void reset_step_size(bf_config *c, const bf_config *d) { c->schedule.step_size = d->schedule.step_size; }
static void reset_eta_min(bf_config *c, const bf_config *d) { c->schedule.eta_min = d->schedule.eta_min; }
static void reset_momentum(bf_config *c, const bf_config *d) { c->optim.momentum = d->optim.momentum; }
static void reset_path(bf_config *c, const bf_config *d) { memcpy(c->data.path, d->data.path, sizeof c->data.path); }

static void test_full_file(void) {
    bf_config cfg;
    char path[64], message[2048];
    bf_status st = load_text(full_file, &cfg, path, message, sizeof message);
    CHECK(st == BF_OK, "full file: %s", message);
    if (st != BF_OK) return;
    CHECK(strcmp(cfg.source, path) == 0, "source is the path: %s", cfg.source);
    CHECK(strcmp(cfg.run.dir, "/tmp/some run dir") == 0, "dir: %s", cfg.run.dir);
    CHECK(cfg.run.seed == 12345678901L, "seed %ld", cfg.run.seed);
    CHECK(cfg.run.device == BF_DEVICE_SEL_CUDA && cfg.run.gpus == 4 && cfg.run.epochs == 90 &&
              cfg.run.log_interval == 7 && cfg.run.eval_every == 0 && cfg.run.checkpoint_every == 5 &&
              cfg.run.precision == BF_PRECISION_TF32 && cfg.run.threads == 3,
          "run section");
    CHECK(bf_config_set(&cfg, "run.precision=tf32_conv") == BF_OK && cfg.run.precision == BF_PRECISION_TF32_CONV &&
              !strcmp(bf_precision_name(BF_PRECISION_TF32_CONV), "tf32_conv") && !strcmp(bf_precision_name(BF_PRECISION_FP32), "fp32"),
          "precision tf32_conv (PyTorch's defaults), and the precisions' names");
    CHECK(cfg.data.dataset == BF_DATASET_PROCEDURAL && strcmp(cfg.data.path, "/data/x") == 0 &&
              cfg.data.batch_size == 256 && cfg.data.eval_batch_size == 1000 && cfg.data.train_limit == 600 &&
              cfg.data.test_limit == 100 && cfg.data.loader_threads == 8 && cfg.data.prefetch == 16,
          "data section");
    CHECK(cfg.data.shuffle == 0 && cfg.data.augment_flip == 1 && cfg.data.augment_crop_pad == 4 &&
              cfg.data.normalize == 0 && cfg.data.procedural_classes == 100 && cfg.data.procedural_size == 64 &&
              cfg.data.procedural_channels == 1 && cfg.data.procedural_train == 123 &&
              cfg.data.procedural_test == 45,
          "data section (2)");
    CHECK(cfg.model.arch == BF_ARCH_RESNET18 && cfg.model.num_classes == 200 && cfg.model.dropout == 0 &&
              cfg.model.hidden == 0 && cfg.model.batchnorm == 0 && cfg.model.bn_momentum == 1 &&
              cfg.model.bn_eps == 1e-3f,
          "model section");
    CHECK(cfg.model.num_channels == 4 && cfg.model.channels[0] == 16 && cfg.model.channels[1] == 32 &&
              cfg.model.channels[2] == 64 && cfg.model.channels[3] == 128 && cfg.model.channels[4] == 0,
          "channels list (%d entries)", cfg.model.num_channels);
    CHECK(cfg.optim.optimizer == BF_OPTIM_ADAMW && cfg.optim.lr == 3e-4f && cfg.optim.momentum == 0 &&
              cfg.optim.nesterov == 0 && cfg.optim.weight_decay == 0.05f && cfg.optim.beta1 == 0.8f &&
              cfg.optim.beta2 == 0.99f && cfg.optim.eps == 1e-6f && cfg.optim.grad_clip_norm == 1.5f &&
              cfg.optim.label_smoothing == 0.1f,
          "optim section");
    CHECK(cfg.schedule.type == BF_SCHED_MULTISTEP && cfg.schedule.unit == BF_SCHED_UNIT_STEP &&
              cfg.schedule.step_size == 1 && cfg.schedule.gamma == 1 && cfg.schedule.eta_min == 1e-5f &&
              cfg.schedule.warmup == 500 && cfg.schedule.warmup_start_factor == 0.01f,
          "schedule section");
    CHECK(cfg.schedule.num_milestones == 3 && cfg.schedule.milestones[0] == 100 &&
              cfg.schedule.milestones[1] == 200 && cfg.schedule.milestones[2] == 300,
          "milestones list (%d entries)", cfg.schedule.num_milestones);
    /* The file sets every key, so some of them are keys its other keys leave unread (resnet18 has
     * no channels list, adamw no momentum, multistep no eta_min, procedural data no path):
     * validation refuses them one at a time, naming each; back at their defaults, it passes. */
    bf_config defaults;
    bf_config_defaults(&defaults);
    struct {
        const char *named;
        void (*reset)(bf_config *c, const bf_config *d);
    } unread[] = {
        {"[model] channels = 16,32,64,128 applies to [model] arch = cnn only", reset_channels},
        {"[model] hidden = 0 applies to [model] arch = cnn only", reset_hidden},
        {"[model] batchnorm = false does not apply to [model] arch = resnet18", reset_batchnorm},
        {"[schedule] step_size = 1 applies to [schedule] type = step only", reset_step_size},
        {"[schedule] eta_min = 1e-05 applies to [schedule] type = cosine only", reset_eta_min},
        {"[optim] momentum = 0 applies to [optim] optimizer = sgd only", reset_momentum},
        {"[data] path = /data/x does not apply to [data] dataset = procedural", reset_path},
    };
    for (size_t i = 0; i < sizeof unread / sizeof unread[0]; i++) {
        st = bf_config_validate(&cfg);
        CHECK(st == BF_ERR_CONFIG && strstr(bf_last_error(), unread[i].named), "unread key %zu: %s", i,
              bf_last_error());
        unread[i].reset(&cfg, &defaults);
    }
    CHECK_OK(bf_config_validate(&cfg));

    /* A file that sets nothing gives the defaults (plus its name as source). */
    bf_config empty;
    st = load_text("; nothing\n[run]\n", &empty, path, message, sizeof message);
    CHECK(st == BF_OK, "empty file: %s", message);
    memcpy(defaults.source, empty.source, sizeof defaults.source);
    CHECK(memcmp(&empty, &defaults, sizeof empty) == 0, "an empty file gives the defaults");

    /* An empty list and an empty path are written "key =". */
    st = load_text("[schedule]\nmilestones =\n[data]\npath =\n", &cfg, path, message, sizeof message);
    CHECK(st == BF_OK && cfg.schedule.num_milestones == 0 && cfg.data.path[0] == '\0', "empty values: %s", message);
}

static void test_refused_files(void) {
    /* The examples of the design. */
    expect_refused("not a number", "[run]\nepochs = 3\n[optim]\n\n\n\n\n\n\n\n\nlr = abc\n", 12, "[optim] lr:",
                   "\"abc\" is not a number", "float > 0", NULL);
    expect_refused("unknown section", "[run]\nepochs = 3\n[modle]\narch = cnn\n", 3, "unknown section [modle]",
                   "(allowed: run, data, model, optim, schedule, spiking, butd, fragments, analysis)", NULL);
    expect_refused("unknown empty section", "[run]\nepochs = 3\n\n[extra]\n", 4, "unknown section [extra]", NULL);
    expect_refused("a key on the section's line", "[data]\nbatch_size = 8\n[run] epochs = 7\n", 3,
                   "text after the section header [run]: \"epochs = 7\"", NULL);
    expect_refused("a second bracket", "[run]]\nepochs = 7\n", 1, "text after the section header [run]: \"]\"", NULL);
    expect_refused("old Mac line ends", "; a comment\r[run]\repochs = 7\r", 1,
                   "a carriage return ends this line without a line feed", NULL);
    expect_refused("a lone carriage return", "[run]\r\nepochs = 7\r\n\rdir = x\r\n", 3,
                   "a carriage return ends this line", NULL);
    {
        char nul_path[] = "/tmp/bf_test_config_nul_XXXXXX";
        int fd = mkstemp(nul_path);
        const char text[] = "[run]\n\0epochs = 7\n"; /* fgets would end line 2's text at the NUL */
        CHECK(fd >= 0 && write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1), "write %s", nul_path);
        if (fd >= 0) close(fd);
        bf_config nul;
        CHECK(bf_config_load(nul_path, &nul) == BF_ERR_CONFIG && strstr(bf_last_error(), ":2: a NUL byte"),
              "a NUL byte refused at its line: %s", bf_last_error());
        unlink(nul_path);
    }
    bf_config commented;
    char commented_path[64], commented_message[2048];
    CHECK(load_text("[run]  ; the run\r\nepochs = 7\n[data]\r\n", &commented, commented_path, commented_message,
                    sizeof commented_message) == BF_OK && commented.run.epochs == 7,
          "a comment after a section header is accepted: %s", commented_message);
    expect_refused("unknown key", "[model]\n\n\n\n\n\narhc = cnn\n", 7, "[model] unknown key \"arhc\"",
                   "allowed: arch, num_classes, dropout, channels, hidden, batchnorm, bn_momentum, bn_eps", NULL);
    expect_refused("enum", "[run]\n[model]\n\n\narch = vgg19\n", 5, "[model] arch: \"vgg19\" is not allowed",
                   "(allowed: cnn, vgg6, vgg11, vgg16, resnet18, resnet50, plasticflex_vgg6, plasticflex_vgg11, plasticflex_vgg16, plasticflex_simple_flex, plasticflex_simple_conv, resnet20, resnet32, resnet44, resnet56, resnet110)", NULL);
    expect_refused("out of range", "[data]\n\n\n\n\n\n\n\nbatch_size = 0\n", 9,
                   "[data] batch_size: 0 is out of range (allowed: 1..65536)", NULL);
    expect_refused("set twice", "[optim]\nlr = 0.1\n\n\n\n\n\n\nlr = 0.2\n", 9, "[optim] lr", "line 2", NULL);
    expect_refused("set twice in two sections", "[optim]\nlr = 0.1\n[run]\n[optim]\nlr = 0.2\n", 5, "line 2", NULL);
    expect_refused("outside a section", "epochs = 3\n[run]\n", 1, "\"epochs\"", "outside any section", "run, data",
                   NULL);

    /* Integers. */
    expect_refused("fraction", "[run]\nepochs = 1.5\n", 2, "[run] epochs", "\"1.5\" is not a whole number",
                   "1..100000", NULL);
    expect_refused("trailing text", "[run]\nepochs = 12abc\n", 2, "\"12abc\" is not a whole number", NULL);
    expect_refused("empty integer", "[run]\nepochs =\n", 2, "[run] epochs", "not a whole number", NULL);
    expect_refused("hex", "[run]\nepochs = 0x10\n", 2, "not a whole number", NULL);
    expect_refused("overflow", "[run]\nlog_interval = 99999999999\n", 2, "[run] log_interval", "too large", NULL);
    expect_refused("long overflow", "[run]\nseed = 99999999999999999999999\n", 2, "[run] seed", "too large", NULL);
    expect_refused("negative", "[run]\nseed = -1\n", 2, "[run] seed: -1 is out of range (allowed: >= 0)", NULL);
    expect_refused("channel count", "[data]\nprocedural_channels = 2\n", 2, "[data] procedural_channels",
                   "(allowed: 1, 3)", NULL);

    /* Booleans. */
    expect_refused("bool", "[data]\nshuffle = maybe\n", 2, "[data] shuffle: \"maybe\" is not a boolean",
                   "true, false", NULL);

    /* Floats. */
    expect_refused("nan", "[optim]\nlr = nan\n", 2, "\"nan\" is not a number", NULL);
    expect_refused("inf", "[optim]\nlr = inf\n", 2, "\"inf\" is not a number", NULL);
    expect_refused("-inf", "[optim]\nweight_decay = -inf\n", 2, "\"-inf\" is not a number", NULL);
    expect_refused("float garbage", "[optim]\nlr = 0.1x\n", 2, "\"0.1x\" is not a number", NULL);
    expect_refused("hexadecimal float", "[optim]\nlr = 0x1p-3\n", 2, "\"0x1p-3\" is not a number", NULL);
    expect_refused("a key and its alias", "[spiking]\nneuron = lif\ndecay = 0.5\nspiking_decay = 0.6\n", 4,
                   "[spiking] spiking_decay: set twice: line 3 set it as [spiking] decay, its alias", NULL);
    expect_refused("two channels", "[butd]\nconv_channels = 8,16,24\n", 2, "takes at most 2 entries, got 3",
                   "2 comma-separated integers", NULL);
    expect_refused("empty float", "[optim]\nlr =\n", 2, "is not a number", NULL);
    expect_refused("zero lr", "[optim]\nlr = 0\n", 2, "[optim] lr: 0 is out of range (allowed: > 0)", NULL);
    expect_refused("dropout 1", "[model]\ndropout = 1\n", 2, "[model] dropout: 1 is out of range",
                   ">= 0 and < 1", NULL);
    expect_refused("gamma 0", "[schedule]\ngamma = 0\n", 2, "> 0 and <= 1", NULL);
    expect_refused("underflow", "[model]\nbn_eps = 1e-50\n", 2, "[model] bn_eps: 1e-50 is out of range", NULL);
    expect_refused("float overflow", "[optim]\nlr = 1e39\n", 2, "[optim] lr: 1e39 is too large for a float", NULL);
    expect_refused("float underflow", "[optim]\nlr = 1e-50\n", 2, "[optim] lr: 1e-50 is out of range",
                   "below the smallest float", NULL);

    /* Lists. */
    expect_refused("empty entry", "[model]\nchannels = 32,,64\n", 2, "[model] channels", "empty entry", NULL);
    expect_refused("trailing comma", "[model]\nchannels = 32,64,\n", 2, "empty entry", NULL);
    expect_refused("empty list", "[model]\nchannels =\n", 2, "[model] channels", "at least 1", NULL);
    expect_refused("list entry range", "[model]\nchannels = 32,0\n", 2, "0 is out of range", "each 1..8192", NULL);
    expect_refused("list entry type", "[model]\nchannels = 32,6x4\n", 2, "\"6x4\" is not a whole number", NULL);
    char too_long[400] = "[model]\nchannels = 1";
    for (int i = 2; i <= BF_LIST_MAX + 1; i++) snprintf(too_long + strlen(too_long), sizeof too_long - strlen(too_long), ",%d", i);
    strcat(too_long, "\n");
    expect_refused("list too long", too_long, 2, "more than 64 entries", NULL);
    expect_refused("decreasing", "[schedule]\nmilestones = 30,20\n", 2, "[schedule] milestones", "strictly increasing",
                   NULL);
    expect_refused("repeated", "[schedule]\nmilestones = 30, 30\n", 2, "strictly increasing", NULL);

    /* Strings. */
    expect_refused("empty dir", "[run]\ndir =\n", 2, "[run] dir", "empty", NULL);

    /* Lines inih cannot read, and the first problem wins. */
    expect_refused("syntax", "[run]\nepochs = 3\njust some words\n", 3, "cannot parse", NULL);
    expect_refused("no closing bracket", "[run\nepochs = 3\n", 1, "cannot parse", NULL);
    expect_refused("syntax before bad value", "[run]\ngarbage\nepochs = x\n", 2, "cannot parse", NULL);
    expect_refused("bad value before syntax", "[run]\nepochs = x\ngarbage\n", 2, "[run] epochs", NULL);
    expect_refused("indented continuation", "[optim]\nlr = 0.1\n  momentum = 0.8\n", 3, "[optim] lr",
                   "continuation", NULL);
    char long_line[3000];
    snprintf(long_line, sizeof long_line, "[run]\n%0300d\nepochs = 2\n", 7);
    expect_refused("long line that is no key", long_line, 2, "longer than", "not a \"key = value\" line", NULL);
    snprintf(long_line, sizeof long_line, "[run]\ndir = %0600d\nepochs = 2\n", 7);
    expect_refused("long value", long_line, 2, "[run] dir", NULL);
    snprintf(long_line, sizeof long_line, "[run]\ndir = %02500d\nepochs = 2\n", 7);
    expect_refused("line over the longest", long_line, 2, "longer than 2048", NULL);

    /* A missing file is an I/O error that names the file. */
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_status st = bf_config_load("/tmp/bf_no_such_dir/missing.ini", &cfg);
    CHECK(st == BF_ERR_IO, "missing file: %s", bf_status_name(st));
    CHECK(strstr(bf_last_error(), "/tmp/bf_no_such_dir/missing.ini") != NULL, "missing file message: %s",
          bf_last_error());
    /* A directory opens for reading; it was refused as "error reading config file" with no reason. */
    st = bf_config_load("/tmp", &cfg);
    CHECK(st == BF_ERR_IO && strstr(bf_last_error(), "config file /tmp is a directory"), "a directory: %s",
          bf_last_error());

    /* Line numbers hold on a file with a byte order mark, Windows line ends and no final newline. */
    expect_refused("bom crlf", "\xEF\xBB\xBF[run]\r\nepochs = 3\r\n\r\nepochs = 4", 4, "line 2", NULL);
}

/* Lines longer than inih's own line buffer (200 bytes in Debian's libinih): a long path and a long
 * comment are read whole, and the line numbers after them stay right. */
/* An error about a relation between keys says where each key it names got its value: a line of
 * the file, a --set override, or its default. */
static void test_relation_locations(void) {
    char path[64], message[1024];
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(load_text("[run]\nepochs = 2\n[optim]\noptimizer = adamw\n; a comment\nnesterov = true\n", &cfg, path,
                       message, sizeof message));
    CHECK(cfg.key_line[0] == 0, "a key the file does not set keeps line 0 (its default)");
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG, "adamw with nesterov refused");
    char want[160];
    snprintf(want, sizeof want, "(set where: [optim] nesterov: %s:6; [optim] optimizer: %s:4)", path, path);
    CHECK(strstr(bf_last_error(), want) != NULL, "the two keys' lines: want \"%s\" in: %s", want, bf_last_error());
    CHECK_OK(bf_config_set(&cfg, "optim.optimizer=sgd"));
    CHECK_OK(bf_config_set(&cfg, "optim.momentum=0"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "(set where: [optim] nesterov: ") && strstr(bf_last_error(), ":6; [optim] momentum: --set)"),
          "a --set override is named as such: %s", bf_last_error());
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "schedule.type=multistep"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG &&
              strstr(bf_last_error(), "(set where: [schedule] type: --set; [schedule] milestones: default)"),
          "a key at its default is named as such: %s", bf_last_error());
}

static void test_long_lines(void) {
    char dir[400], text[1200], path[64], message[2048];
    memset(dir, 'd', sizeof dir - 1);
    dir[0] = '/';
    dir[sizeof dir - 1] = '\0';
    snprintf(text, sizeof text, "[run]\n; %s\ndir =  %s\t ; where it goes\r\nepochs = 3\n[data]\nbatch_size = 0\n", dir,
             dir);
    bf_config cfg;
    bf_config_defaults(&cfg);
    bf_status st = load_text(text, &cfg, path, message, sizeof message);
    CHECK(st == BF_ERR_CONFIG && strstr(message, ":6: [data] batch_size") != NULL,
          "a bad value after two long lines is on line 6: %s", message);
    *strrchr(text, '[') = '\0'; /* without the bad [data] section */
    bf_config_defaults(&cfg);
    st = load_text(text, &cfg, path, message, sizeof message);
    CHECK(st == BF_OK, "long lines: %s", message);
    CHECK(strcmp(cfg.run.dir, dir) == 0 && cfg.run.epochs == 3, "long dir read back as %zu characters, epochs %d",
          strlen(cfg.run.dir), cfg.run.epochs);
}

static void test_set(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "optim.lr=0.01"));
    CHECK(cfg.optim.lr == 0.01f, "lr %g", cfg.optim.lr);
    CHECK_OK(bf_config_set(&cfg, " model.channels = 16, 32 ,64 "));
    CHECK(cfg.model.num_channels == 3 && cfg.model.channels[2] == 64, "channels");
    CHECK_OK(bf_config_set(&cfg, "run.dir=runs/x=y"));
    CHECK(strcmp(cfg.run.dir, "runs/x=y") == 0, "dir with '=': %s", cfg.run.dir);
    CHECK_OK(bf_config_set(&cfg, "schedule.milestones="));
    CHECK(cfg.schedule.num_milestones == 0, "empty milestones");
    CHECK_OK(bf_config_set(&cfg, "data.path="));
    CHECK(cfg.data.path[0] == '\0', "empty path");
    CHECK_OK(bf_config_set(&cfg, "model.arch=vgg16"));
    CHECK(cfg.model.arch == BF_ARCH_VGG16, "arch");

    expect_set_refused("optim.lr=abc", "--set optim.lr=abc: [optim] lr: \"abc\" is not a number (expected a float > 0)",
                       NULL);
    expect_set_refused("data.batch_size=0", "--set data.batch_size=0: [data] batch_size: 0 is out of range",
                       "1..65536", NULL);
    expect_set_refused("model.arch=vgg19", "\"vgg19\" is not allowed", "resnet50", NULL);
    /* the BU-TD reference's unread keys: another value would be ignored, so it is refused */
    expect_set_refused("butd.non_linearity_fn=tanh", "[butd] non_linearity_fn: \"tanh\" is not allowed (allowed: relu)", NULL);
    /* PlasticFlex's documented keys: two are aliases, two its code never read are refused saying so */
    CHECK_OK(bf_config_set(&cfg, "spiking.spiking_threshold=0.75"));
    CHECK_OK(bf_config_set(&cfg, "spiking.spiking_decay=0.5"));
    CHECK(cfg.model.spiking.threshold == 0.75f && cfg.model.spiking.decay == 0.5f,
          "spiking_threshold and spiking_decay set threshold and decay (%g, %g)", cfg.model.spiking.threshold,
          cfg.model.spiking.decay);
    expect_set_refused("model.conv_pool_ratio=0.5", "[model] conv_pool_ratio: the PlasticFlex reference documents",
                       "plasticflex.md section 10", NULL);
    expect_set_refused("model.mask_type=hard", "[model] mask_type", "never reads it", NULL);
    expect_set_refused("lr=0.1", "--set lr=0.1", "section.key=value", NULL);
    expect_set_refused("optim.lr", "--set optim.lr", "section.key=value", NULL);
    expect_set_refused("modle.arch=cnn", "--set modle.arch=cnn: unknown section [modle]", "run, data, model", NULL);
    expect_set_refused("model.arhc=cnn", "[model] unknown key \"arhc\"", "arch, num_classes", NULL);
    char too_long[BF_PATH_MAX + 32];
    snprintf(too_long, sizeof too_long, "run.dir=%0*d", BF_PATH_MAX, 1);
    expect_set_refused(too_long, "[run] dir", "at most 511 characters", NULL);
    /* what a file line could not hold: the run's config.ini would read it back cut short */
    expect_set_refused("run.dir=runs/a ;b", "--set run.dir=runs/a ;b: [run] dir: a value cannot start a comment", NULL);
    expect_set_refused("run.dir=;b", "a value cannot start a comment", NULL);
}

static void test_validate(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.schedule.type = BF_SCHED_MULTISTEP;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[schedule] milestones"),
          "multistep without milestones: %s", bf_last_error());
    CHECK_OK(bf_config_set(&cfg, "schedule.milestones=30,60"));
    CHECK_OK(bf_config_validate(&cfg));

    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "run.device=cpu"));
    CHECK_OK(bf_config_set(&cfg, "run.gpus=2"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[run] gpus") &&
              strstr(bf_last_error(), "[run] device"),
          "cpu with 2 gpus: %s", bf_last_error());

    /* [run] force_nccl: off by default (gpus = 1 is the plain path); the NCCL path needs a GPU. */
    bf_config_defaults(&cfg);
    CHECK(cfg.run.force_nccl == 0, "force_nccl defaults to false");
    CHECK_OK(bf_config_set(&cfg, "run.force_nccl=true"));
    CHECK(cfg.run.force_nccl == 1, "run.force_nccl=true sets it");
    CHECK_OK(bf_config_validate(&cfg));
    CHECK_OK(bf_config_set(&cfg, "run.device=cpu"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[run] force_nccl") &&
              strstr(bf_last_error(), "[run] device"),
          "cpu with force_nccl: %s", bf_last_error());

    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "optim.nesterov=true"));
    CHECK_OK(bf_config_set(&cfg, "optim.momentum=0"));
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[optim] momentum"),
          "nesterov without momentum: %s", bf_last_error());

    /* Options the run would ignore are refused, naming the key that decides. */
    const struct {
        const char *sets[3], *says;
    } ignored[] = {
        {{"optim.optimizer=adamw", "optim.nesterov=true"}, "[optim] nesterov = true applies to [optim] optimizer = sgd only"},
        {{"optim.optimizer=adam", "optim.nesterov=true"}, "[optim] nesterov = true applies to [optim] optimizer = sgd only, not adam"},
        {{"schedule.type=cosine", "schedule.eta_min=0.5"}, "[schedule] eta_min = 0.5 is above [optim] lr = 0.1"},
        {{"model.fully_flex=true"}, "[model] fully_flex = true needs [model] flex = true"},
        {{"model.flex_layers=0,2"}, "[model] flex_layers = 0,2 needs [model] flex = true"},
        {{"model.flex_joint=mask"}, "[model] flex_joint = mask needs [model] flex = true"},
        {{"model.flex=true", "model.threshold_mode=frozen_random"},
         "[model] threshold_mode = frozen_random applies to [model] flex_joint = mask only"},
        {{"model.flex=true", "model.flex_logits_bn=true"}, "[model] flex_logits_bn = true applies to [model] flex_joint = mask"},
        {{"model.flex=true", "model.flex_joint=mask", "model.flex_tie=pool"},
         "[model] flex_tie = pool applies to [model] flex_joint = channelwise_max only"},
        {{"model.flex=true", "model.flex_joint=mask", "model.flex_mask_factor=50"},
         "[model] flex_mask_factor = 50 applies to [model] flex_mask = sigmoid_mul only (got flex_mask = sigmoid_hard)"},
        /* what a BU-TD network would ignore */
        {{"butd.network=fc", "model.bn_eps=0.001"}, "[model] bn_eps = 0.001 applies to [model] networks, not [butd] network = fc"},
        {{"butd.network=simple", "run.val_batches=1"}, "[run] val_batches = 1 applies to [model] networks, not [butd] network = simple"},
        {{"butd.network=fc", "butd.guided=true"}, "[butd] guided = true needs a multi-task [data] dataset"},
        {{"butd.network=fc", "butd.batch_norm=true", "butd.learning=backprop"},
         "[butd] batch_norm = true applies to [butd] network = resnet18 only"},
        /* a neuron's parameters that the chosen neuron, reset or surrogate does not read */
        {{"spiking.decay=0.5"}, "[spiking] decay = 0.5 needs a [spiking] neuron"},
        {{"spiking.time_steps=4"}, "[spiking] time_steps = 4 needs a [spiking] neuron"},
        {{"spiking.neuron=clamp01", "spiking.threshold=0.5"}, "[spiking] threshold = 0.5 applies to [spiking] neuron = lif, if or step only"},
        {{"spiking.neuron=step", "spiking.threshold=0.5"}, "[spiking] threshold = 0.5 applies to [spiking] neuron = lif or if only"},
        {{"spiking.neuron=step", "spiking.reset=soft"}, "[spiking] reset = soft applies to [spiking] neuron = lif or if only"},
        {{"spiking.neuron=if", "spiking.decay=0.5"}, "[spiking] decay = 0.5 applies to [spiking] neuron = lif only"},
        {{"spiking.neuron=lif", "spiking.reset=none", "spiking.detach_reset=true"},
         "[spiking] detach_reset = true applies to [spiking] reset = hard or soft only"},
        {{"spiking.neuron=lif", "spiking.alpha=2"}, "[spiking] alpha = 2 applies to [spiking] surrogate = sigmoid or arctan only (got tanh)"},
        {{"spiking.neuron=lif", "spiking.surrogate=sigmoid", "spiking.width=1"},
         "[spiking] width = 1 applies to [spiking] surrogate = rectangular or triangle only (got sigmoid)"},
        {{"spiking.neuron=step", "spiking.surrogate=arctan", "spiking.height=1"},
         "[spiking] height = 1 applies to [spiking] surrogate = rectangular, triangle or tanh only (got arctan)"},
        {{"spiking.neuron=if", "spiking.spiking_decay=0.5"}, /* named as set: by its alias */
         "[spiking] spiking_decay = 0.5 applies to [spiking] neuron = lif only"},
        /* keys another arch, schedule, optimiser or dataset would read */
        {{"butd.depth=3"}, "[butd] depth = 3 needs [butd] network = fc, simple or resnet18"},
        {{"butd.network=fc", "model.arch=vgg16"}, "[model] arch = vgg16 applies to [model] networks, not [butd] network = fc"},
        {{"butd.network=fc", "spiking.neuron=lif"}, "[spiking] neuron = lif applies to [model] networks, not [butd] network = fc"},
        {{"model.arch=vgg6", "model.channels=8"}, "[model] channels = 8 applies to [model] arch = cnn only"},
        {{"model.linear_init=pytorch_default"}, "[model] linear_init = pytorch_default applies to [model] arch = vgg6, vgg11 or vgg16 only (got cnn)"},
        {{"model.arch=resnet18", "model.dropout=0.2"}, "[model] dropout = 0.2 does not apply to [model] arch = resnet18"},
        {{"model.hidden=0", "model.dropout=0.2"}, "[model] dropout = 0.2 needs [model] hidden > 0"},
        {{"model.arch=plasticflex_vgg6", "model.flex=true", "model.fully_flex=true"},
         "[model] fully_flex = true does not apply to [model] arch = plasticflex_vgg6"},
        {{"model.arch=plasticflex_simple_flex", "model.batchnorm=false"},
         "[model] batchnorm = false does not apply to [model] arch = plasticflex_simple_flex (the reference's network: no batch-norm)"},
        {{"model.arch=plasticflex_simple_conv", "model.dropout=0.2"},
         "[model] dropout = 0.2 does not apply to [model] arch = plasticflex_simple_conv (the reference's network: no batch-norm, no dropout)"},
        {{"model.flex=true", "model.flex_joint=mask", "model.fuse_flex_bn=false"},
         "[model] fuse_flex_bn = false applies to [model] flex = true with flex_joint = channelwise_max only (got flex_joint = mask)"},
        {{"run.flex_kernels=slide"}, "[run] flex_kernels = slide needs [model] flex = true"},
        {{"model.flex=true", "model.flex_channels=bilinear", "model.fuse_flex_scatter=false"},
         "[model] fuse_flex_scatter = false applies to [model] flex_channels = expand only (got bilinear)"},
        {{"butd.network=fc", "butd.learning=backprop", "butd.noise_std=0.1"},
         "[butd] noise_std applies to [butd] learning = counter_hebb only"},
        {{"butd.network=fc", "butd.loss=bce", "optim.label_smoothing=0.1"},
         "[optim] label_smoothing applies to [butd] loss = cross_entropy only, not bce"},
        {{"butd.network=fc", "butd.conv_channels=16,16"}, "[butd] conv_channels = 16,16 applies to [butd] network = simple only (got fc)"},
        {{"butd.network=simple", "butd.depth=2"}, "[butd] depth = 2 applies to [butd] network = fc only (got simple)"},
        {{"butd.network=resnet18", "butd.hidden=64"}, "[butd] hidden = 64 applies to [butd] network = fc or simple only"},
        {{"butd.network=fc", "butd.task_embedding=8"}, "[butd] task_embedding = 8 needs [butd] guided = true"},
        {{"butd.network=fc", "butd.td_init=legacy"}, "[butd] td_init = legacy applies to [butd] weights = separate only"},
        {{"schedule.milestones=1"}, "[schedule] milestones = 1 applies to [schedule] type = multistep only (got constant)"},
        {{"schedule.type=cosine", "schedule.gamma=0.5"}, "[schedule] gamma = 0.5 applies to [schedule] type = step or multistep only (got cosine)"},
        {{"schedule.type=step", "schedule.step_size=2", "schedule.eta_min=0.01"}, "[schedule] eta_min = 0.01 applies to [schedule] type = cosine only"},
        {{"schedule.warmup_start_factor=0.5"}, "[schedule] warmup_start_factor = 0.5 needs [schedule] warmup > 0"},
        {{"schedule.unit=step"}, "[schedule] unit = step changes nothing under [schedule] type = constant without warmup"},
        {{"optim.optimizer=adamw", "optim.momentum=0.5"}, "[optim] momentum = 0.5 applies to [optim] optimizer = sgd only"},
        {{"optim.optimizer=adam", "optim.momentum=0.5"}, "[optim] momentum = 0.5 applies to [optim] optimizer = sgd only, not adam"},
        {{"optim.beta2=0.9"}, "[optim] beta2 = 0.9 applies to [optim] optimizer = adam or adamw only, not sgd"},
        {{"data.procedural_size=16"}, "[data] procedural_size = 16 applies to [data] dataset = procedural only"},
        {{"data.dataset=procedural", "data.path=/tmp"}, "[data] path = /tmp does not apply to [data] dataset = procedural"},
        {{"data.image_size=64"}, "[data] image_size = 64 applies to the JPEG [data] dataset"},
        {{"data.dataset=imagefolder", "data.crop_scale_min=0.2"},
         "[data] crop_scale_min = 0.2 applies to [data] train_transform = random_resized_crop only"},
        {{"data.dataset=imagenet100", "data.val_labels=val.csv"}, "[data] val_labels = val.csv applies to [data] dataset = imagenet only"},
        {{"data.multi_seed=3"}, "[data] multi_seed = 3 applies to [data] dataset = multi_mnist or multi_fashion_mnist only"},
        {{"data.subset_size=10"}, "[data] subset_size = 10 needs [data] subset = balanced or random"},
        {{"data.noise_splits=train"}, "[data] noise_splits = train needs [data] input_noise_std > 0"},
        {{"spiking.neuron=clamp01"}, "[spiking] neuron = clamp01 is stateless, the reference's single-step activation: "
                                     "with direct encoding its [spiking] time_steps = 10 steps"},
        {{"data.val_dir=/tmp/c"}, "[data] val_dir = /tmp/c applies to the JPEG [data] dataset"},
        {{"model.arch=resnet50", "model.oci_distance=similar"}, "[model] oci_distance = similar needs [model] divisive_norm = tuned"},
        {{"model.init_exclude=fc"}, "[model] init_exclude = fc needs [model] init_weights"},
        {{"run.device=cpu", "run.rendezvous=/tmp/r"}, "[run] rendezvous = /tmp/r needs [run] device = cuda or auto"},
    };
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
        bf_config_defaults(&cfg);
        for (int j = 0; j < 3 && ignored[i].sets[j]; j++) CHECK_OK(bf_config_set(&cfg, ignored[i].sets[j]));
        CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), ignored[i].says),
              "%s ... refused, saying \"%s\": %s", ignored[i].sets[0], ignored[i].says, bf_last_error());
    }
    /* ... and the same keys where they apply, or at their defaults, are accepted. */
    const char *accepted[][4] = {{"optim.nesterov=true"},
                                 {"data.dataset=imagefolder", "data.val_dir=/tmp/c"},
                                 {"model.arch=resnet50", "model.divisive_norm=tuned", "model.oci_distance=similar"},
                                 {"model.init_weights=w.safetensors", "model.init_exclude=fc"},
                                 {"run.device=cuda", "run.rendezvous=/tmp/r"},
                                 {"schedule.type=cosine", "schedule.eta_min=0.1"},
                                 {"model.flex=true", "model.fully_flex=true", "model.flex_tie=pool"},
                                 {"model.flex=true", "model.flex_joint=mask", "model.threshold_mode=frozen_random",
                                  "model.flex_logits_bn=true"},
                                 {"model.flex_joint=channelwise_max", "model.flex_channels=expand"},
                                 {"model.flex=true", "model.flex_joint=mask", "model.flex_mask=sigmoid_mul",
                                  "model.flex_mask_factor=50"},
                                 {"spiking.time_steps=1", "spiking.decay=0.95", "spiking.threshold=1.0"},
                                 {"spiking.neuron=step", "spiking.time_steps=1", "spiking.height=0.5"},
                                 {"spiking.neuron=lif", "spiking.surrogate=triangle", "spiking.width=1", "spiking.height=1"},
                                 {"spiking.neuron=if", "spiking.surrogate=sigmoid", "spiking.alpha=2"},
                                 {"spiking.neuron=lif", "spiking.reset=soft", "spiking.detach_reset=true"},
                                 {"butd.network=fc", "butd.depth=2", "model.num_classes=20"},
                                 /* the reference configs' unread keys, with their one value (a ported config loads) */
                                 {"butd.network=fc", "butd.non_linearity_fn=relu", "butd.lateral_fn=galu"},
                                 {"model.arch=vgg16", "model.linear_init=pytorch_default", "model.dropout=0.2"},
                                 {"model.arch=resnet50", "model.dropout=0"}, /* no dropout, as built */
                                 {"model.hidden=0", "model.dropout=0"},
                                 {"model.arch=resnet18", "model.flex=true", "model.fully_flex=true"},
                                 {"model.flex=true", "model.fuse_flex_bn=false", "run.flex_kernels=slide"},
                                 {"model.flex=true", "model.flex_joint=mask", "run.flex_kernels=slide"},
                                 {"butd.network=simple", "butd.conv_channels=16,16", "butd.weights=separate",
                                  "butd.td_init=legacy"},
                                 {"schedule.type=multistep", "schedule.milestones=3", "schedule.gamma=0.5"},
                                 {"schedule.warmup=2", "schedule.unit=step", "schedule.warmup_start_factor=0.5"},
                                 {"optim.optimizer=adamw", "optim.beta1=0.8", "optim.eps=1e-6"},
                                 {"optim.optimizer=adam", "optim.beta2=0.99", "optim.weight_decay=0.01"},
                                 {"data.dataset=procedural", "data.procedural_size=16"},
                                 {"data.dataset=imagefolder", "data.train_transform=random_resized_crop",
                                  "data.crop_scale_min=0.2", "data.image_size=64"},
                                 {"data.subset=balanced", "data.subset_size=10", "data.subset_seed=7"},
                                 {"data.input_noise_std=0.1", "data.noise_splits=train"},
                                 {"data.dataset=multi_mnist", "data.multi_seed=3"}};
    for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
        bf_config_defaults(&cfg);
        for (int j = 0; j < 4 && accepted[i][j]; j++) CHECK_OK(bf_config_set(&cfg, accepted[i][j]));
        CHECK_OK(bf_config_validate(&cfg));
    }
    /* optimizer = adam is its own kind (torch.optim.Adam, the decay coupled) */
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "optim.optimizer=adam"));
    CHECK(cfg.optim.optimizer == BF_OPTIM_ADAM, "optim.optimizer=adam parsed as BF_OPTIM_ADAM (got %d)",
          (int)cfg.optim.optimizer);

    /* Values set by code get the same checks as values read from a file. */
    bf_config_defaults(&cfg);
    cfg.data.batch_size = 0;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[data] batch_size: 0 is out of range"),
          "batch_size 0 by code: %s", bf_last_error());
    bf_config_defaults(&cfg);
    cfg.model.arch = (bf_arch)99;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[model] arch"),
          "arch 99 by code: %s", bf_last_error());
    bf_config_defaults(&cfg);
    cfg.schedule.num_milestones = 2;
    cfg.schedule.milestones[0] = 50;
    cfg.schedule.milestones[1] = 10;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "strictly increasing"),
          "milestones decreasing by code: %s", bf_last_error());
    bf_config_defaults(&cfg);
    cfg.model.num_channels = BF_LIST_MAX + 1;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[model] channels"),
          "65 channels by code: %s", bf_last_error());
    bf_config_defaults(&cfg);
    cfg.optim.lr = NAN;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[optim] lr"), "lr nan by code: %s",
          bf_last_error());
    bf_config_defaults(&cfg);
    cfg.data.shuffle = 2;
    CHECK(bf_config_validate(&cfg) == BF_ERR_CONFIG && strstr(bf_last_error(), "[data] shuffle"),
          "shuffle 2 by code: %s", bf_last_error());
}

/* Prints cfg, loads the printout and checks that it gives the same struct. */
static void check_round_trip(const char *what, const bf_config *cfg) {
    char path[64], printed[16384];
    FILE *mem = fmemopen(printed, sizeof printed, "w");
    if (!mem) {
        CHECK(0, "fmemopen");
        return;
    }
    bf_config_print(cfg, mem);
    fclose(mem);
    bf_config loaded;
    char message[2048];
    bf_status st = load_text(printed, &loaded, path, message, sizeof message);
    CHECK(st == BF_OK, "%s: printout does not load: %s\n%s", what, message, printed);
    bf_config expected = *cfg;
    memcpy(expected.source, loaded.source, sizeof expected.source);
    memcpy(expected.key_line, loaded.key_line, sizeof expected.key_line); /* where they were set differs */
    CHECK(memcmp(&expected, &loaded, sizeof loaded) == 0, "%s: print -> load changed the config:\n%s", what, printed);

    /* The printout names every key, and the reference documents every key. */
    for (size_t i = 0; i < NUM_ALL_KEYS; i++) {
        const char *key = strchr(all_keys[i], '.') + 1;
        char line_start[64];
        snprintf(line_start, sizeof line_start, "\n%s ", key);
        CHECK(strstr(printed, line_start) != NULL, "%s: printout lacks %s", what, all_keys[i]);
    }
}

static void test_print(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    check_round_trip("defaults", &cfg);

    char path[64], message[2048];
    bf_status st = load_text(full_file, &cfg, path, message, sizeof message);
    CHECK(st == BF_OK, "full file: %s", message);
    check_round_trip("full file", &cfg);

    /* Awkward floats must come back bit for bit. */
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_set(&cfg, "optim.lr=0.123456789"));
    CHECK_OK(bf_config_set(&cfg, "model.bn_eps=1.17549435e-38"));
    CHECK_OK(bf_config_set(&cfg, "optim.weight_decay=3.4e38"));
    check_round_trip("awkward floats", &cfg);

    /* What bioflex-train prints at start: the keys off their defaults, which load back to the same
     * config (the rest are defaults), and no other key or section. */
    {
        char changed[2048];
        bf_config_defaults(&cfg);
        CHECK_OK(bf_config_set(&cfg, "data.batch_size=7"));
        CHECK_OK(bf_config_set(&cfg, "model.channels=8,16"));
        FILE *out = fmemopen(changed, sizeof changed, "w");
        bf_config_print_changed(&cfg, out);
        fclose(out);
        bf_config loaded;
        char where[64];
        CHECK(load_text(changed, &loaded, where, message, sizeof message) == BF_OK &&
                  loaded.data.batch_size == 7 && loaded.model.num_channels == 2 && loaded.model.channels[1] == 16,
              "the changed keys load back: %s\n%s", message, changed);
        CHECK(strstr(changed, "[data]") && strstr(changed, "[model]") && !strstr(changed, "[run]") &&
                  !strstr(changed, "epochs") && !strstr(changed, "hidden"),
              "only the changed keys and their sections are printed:\n%s", changed);
    }

    /* Every key can be set through --set with the text the printout shows. */
    char printed[16384];
    FILE *mem = fmemopen(printed, sizeof printed, "w");
    bf_config_defaults(&cfg);
    bf_config_print(&cfg, mem);
    fclose(mem);
    for (size_t i = 0; i < NUM_ALL_KEYS; i++) {
        const char *key = strchr(all_keys[i], '.') + 1;
        char line_start[64], assignment[1024];
        snprintf(line_start, sizeof line_start, "\n%s ", key);
        const char *line = strstr(printed, line_start);
        if (!line) continue; /* reported by check_round_trip */
        const char *equals = strchr(line, '=');
        const char *end = strchr(equals, '\n');
        snprintf(assignment, sizeof assignment, "%s=%.*s", all_keys[i], (int)(end - equals - 1), equals + 1);
        bf_config copy = cfg;
        CHECK_OK(bf_config_set(&copy, assignment));
        memcpy(copy.key_line, cfg.key_line, sizeof cfg.key_line); /* now "--set" */
        CHECK(memcmp(&copy, &cfg, sizeof cfg) == 0, "--set %s changed a default", assignment);
    }

    /* The reference: a table row for every key, and the allowed values. */
    static char reference[1 << 20]; /* the whole reference, some 100 KB */
    mem = fmemopen(reference, sizeof reference, "w");
    bf_config_print_reference(mem);
    fclose(mem);
    for (size_t i = 0; i < NUM_ALL_KEYS; i++) {
        const char *key = strchr(all_keys[i], '.') + 1;
        char row[64];
        snprintf(row, sizeof row, "| `%s` |", key);
        CHECK(strstr(reference, row) != NULL, "reference lacks %s", all_keys[i]);
    }
    const char *sections[] = {"## [run]", "## [data]", "## [model]", "## [optim]", "## [schedule]"};
    for (size_t i = 0; i < 5; i++) CHECK(strstr(reference, sections[i]) != NULL, "reference lacks %s", sections[i]);
    CHECK(strstr(reference, "cnn, vgg6, vgg11, vgg16, resnet18, resnet50") != NULL, "reference lists the archs");
    CHECK(strstr(reference, "1..65536") != NULL, "reference lists batch_size's range");
}

static void test_quickstart(void) {
    const char *path = BIOFLEX_SOURCE_DIR "/configs/quickstart.ini";
    bf_config cfg;
    CHECK_OK(bf_config_load(path, &cfg));
    CHECK_OK(bf_config_validate(&cfg));
    CHECK(cfg.data.dataset == BF_DATASET_FASHION_MNIST && cfg.model.arch == BF_ARCH_CNN,
          "quickstart trains a CNN on Fashion-MNIST");
    CHECK(strcmp(cfg.source, path) == 0, "quickstart source: %s", cfg.source);
}

int main(void) {
    test_defaults();
    test_full_file();
    test_refused_files();
    test_long_lines();
    test_relation_locations();
    test_set();
    test_validate();
    test_print();
    test_quickstart();
    return bf_test_finish();
}

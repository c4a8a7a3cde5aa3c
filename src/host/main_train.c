/* bioflex-train - trains the network an INI file describes (see the README's config reference). */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bioflex/butd.h"
#include "bioflex/fragments_run.h"
#include "bioflex/checkpoint.h"
#include "bioflex/comm.h"
#include "bioflex/train.h"
#include "cli.h"
#include "fsutil.h"

static const char usage[] =
    "usage: bioflex-train [--device cpu|cuda|auto] [--gpus N] [--set section.key=value]... [--resume DIR]\n"
    "                     [--dry-run] cfg.ini\n"
    "       bioflex-train --help | --version | --help-config\n"
    "\n"
    "  --device cpu|cuda|auto  the CPU reference backend, the first CUDA GPU, or a GPU where there is one\n"
    "                     (default: [run] device)\n"
    "  --gpus N           data-parallel GPUs (same as --set run.gpus=N)\n"
    "  --set s.k=v        override key k of section [s]; checked like the file (repeatable)\n"
    "  --resume DIR       continue from a checkpoint directory, or from the latest checkpoint of a run directory\n"
    "  --dry-run          print the resolved config and the model table (layers, shapes, parameters, FLOPs,\n"
    "                     activation memory), then exit\n"
    "  --help-config      print every config section and key with its type, default and allowed values\n"
    "\n"
    "SIGINT (Ctrl-C), SIGTERM, SIGUSR1 or SIGHUP (the terminal closed; not under nohup) stops the run after\n"
    "the current step with a checkpoint of that position (several ranks: at the next log interval); a second\n"
    "Ctrl-C ends it at once. Under Open MPI's mpirun send SIGUSR1 to mpirun: it forwards that at once\n"
    "(SIGTERM only after odls_base_sigkill_timeout).\n"
    "exit status: 0 success, 2 bad command line or config, 1 runtime failure, 128+signal stopped by a signal\n";

/* The signal that asked the run to stop (0: none). A handler can only talk to the program through
 * a global, so this is the program's one; the run reads it through bf_train_options.stop. A
 * lock-free atomic_int: the handler runs in whichever thread the signal lands in, and C11 allows
 * a handler only lock-free atomics or volatile sig_atomic_t, of which only the atomic is seen
 * across threads. */
static atomic_int stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the stop flag must be lock-free to be written in a signal handler");
/* Whether the handler may say so on stderr: only on a terminal of our own. Under a launcher
 * (mpirun's pseudo-terminal) nobody may be reading any more, and a write there could block the
 * handler for good. */
static int note_on_signal;

/* The first SIGINT, SIGTERM, SIGUSR1 or SIGHUP asks for a clean stop. SIGINT gets its default action back,
 * so a second Ctrl-C ends the run at once; SIGTERM and SIGUSR1 stay caught, because launchers repeat
 * them (Slurm may), and a repeat must not undo the stop that is under way. SIGUSR1 is the one to
 * send through Open MPI's mpirun: it forwards SIGUSR1 to the ranks at once and waits for them,
 * whereas on SIGTERM it stops reading their output, sleeps odls_base_sigkill_timeout seconds (1 by
 * default), and only then sends SIGTERM, then SIGKILL as long again after it. Only
 * async-signal-safe calls. */
static void on_stop_signal(int sig) {
    static const char note[] = "\nbioflex-train: stopping after the current step with a checkpoint (Ctrl-C again ends "
                               "the run at once)\n";
    int none = 0;
    /* A repeated SIGTERM, SIGUSR1 or SIGHUP, or one that landed in another thread at the same moment. */
    if (!atomic_compare_exchange_strong(&stop_signal, &none, sig)) return;
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGINT, &dfl, NULL);
    if (note_on_signal) {
        ssize_t ignored = write(STDERR_FILENO, note, sizeof note - 1); /* async-signal-safe; printf is not */
        (void)ignored;
    }
}

static void catch_stop_signals(void) {
    note_on_signal = isatty(STDERR_FILENO) && bf_comm_launcher_world() == 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    /* SA_RESTART: the signal lands in any thread, MPI's and NCCL's included, and their system calls
     * must not fail with EINTR (without it, a collective in flight was seen to hang). */
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGINT); /* one handler at a time */
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGUSR1);
    sigaddset(&sa.sa_mask, SIGHUP);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    /* SIGHUP: the terminal or ssh session the run was started from went away, which killed the run
     * without a checkpoint. Under nohup (SIGHUP ignored) the researcher asked for it to be ignored. */
    struct sigaction hangup;
    if (sigaction(SIGHUP, NULL, &hangup) == 0 && hangup.sa_handler != SIG_IGN) sigaction(SIGHUP, &sa, NULL);
    /* A launcher that is shutting down closes our stdout: a progress line must
     * then fail quietly (EPIPE) instead of killing the run before it writes its checkpoint. */
    signal(SIGPIPE, SIG_IGN);
}

/* "2026-12-04T06:30:00Z host gpu-node-3, bioflex-train 0.1.0 (CUDA backend built)": when, where and which. */
static void describe_start(char *out, size_t size) {
    char when[32] = "?", host[64] = "?";
    time_t now = time(NULL);
    struct tm utc;
    if (gmtime_r(&now, &utc)) strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &utc);
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    snprintf(out, size, "%s host %s, bioflex-train %s (CUDA backend %s)", when, host, BIOFLEX_VERSION,
             bf_cuda_built() ? "built" : "not built");
}

/* Plans the model from the dataset's known shape: no file is read and nothing is allocated. */
static int dry_run(const bf_config *cfg) {
    bf_dataset shape;
    memset(&shape, 0, sizeof shape);
    snprintf(shape.name, sizeof shape.name, "%s", bf_dataset_name(cfg->data.dataset));
    bf_dataset_shape(&cfg->data, &shape.c, &shape.h, &shape.w, &shape.num_classes);
    bf_dataset *train = &shape;
    if (cfg->fragments.network != 0) { /* Net Fragments: fixed shapes, nothing to plan */
        printf("\nnet fragments: S1 4 fixed 5x5 orientation filters on 32x32 lines; S2 40 cells a pixel (4 orientations x "
               "10 alternatives) over 44 inputs x 11x11, %d time steps\ntotal: 212960 parameters (S2's lateral weights, "
               "learned by the Hebbian rule; S1 has none)\n", cfg->fragments.time_steps);
        return BF_EXIT_OK;
    }
    if (cfg->butd.network != 0) { /* a BU-TD network ([butd], butd_zoo.c), planned without memory */
        bf_butd_net *net = NULL;
        int classes = 0;
        bf_status bs = bf_butd_outputs(cfg, train->name, train->num_classes, &classes);
        if (bs == BF_OK)
            bs = bf_butd_build(NULL, &cfg->butd, train->c, train->h, train->w, cfg->data.batch_size, classes,
                                     bf_dataset_num_tasks(&cfg->data), cfg->run.seed, &net);
        if (bs == BF_ERR_CONFIG) bf_config_locate_keys(cfg); /* a relation of the [butd] keys, or with the data */
        if (bs != BF_OK) {
            fprintf(stderr, "error: %s\n", bf_last_error());
            return bs == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
        }
        printf("\nBU-TD network for %s images %dx%dx%d, %d output%s:\n", train->name, train->c, train->h, train->w,
               classes, classes == 1 ? " (binary heads, BCE)" : "s");
        bf_butd_print_table(net, stdout);
        bf_butd_destroy(net);
        return BF_EXIT_OK;
    }
    bf_model *m = NULL;
    bf_status s = bf_run_build_model(cfg, NULL, train, 1, &m);
    if (s == BF_OK) {
        printf("\nmodel %s for %s images %dx%dx%d, %d classes:\n", m->arch, train->name, train->c, train->h, train->w,
               m->num_classes);
        bf_model_print_table(m, stdout);
        /* parameters, gradients, the optimiser's one or two moments, and with micro_batches the slices' sum */
        const int param_copies = (cfg->optim.optimizer == BF_OPTIM_ADAMW || cfg->optim.optimizer == BF_OPTIM_ADAM ? 4 : 3) +
                                 (cfg->data.micro_batches > 1);
        printf("planned device memory: %.1f MiB activations, gradients and scratch, %.1f MiB parameters + gradients + "
               "optimizer state%s\n", m->arena_bytes / 1048576.0, m->num_param_floats * 4.0 * param_copies / 1048576.0,
               cfg->data.micro_batches > 1 ? " + the slices' gradient sum" : "");
        if (cfg->data.micro_batches > 1)
            printf("([data] micro_batches = %d: the network takes %d images at a time, slices of the step's batch of %d)\n",
                   cfg->data.micro_batches, bf_data_slice(&cfg->data), cfg->data.batch_size);
        if (cfg->run.device != BF_DEVICE_SEL_CPU) { /* chosen at the first step, within the key's limit */
            double least = -1;
            for (int i = 0; i < m->num_layers; i++)
                if (m->layers[i].kind == BF_LAYER_CONV || m->layers[i].kind == BF_LAYER_FLEX)
                    for (int pass = 0; pass < 2; pass++)
                        if (least < 0 || m->layers[i].ws_free_bytes[pass] < least) least = m->layers[i].ws_free_bytes[pass];
            printf("on a GPU, plus the cuDNN workspace the chosen convolution algorithms need: at most %d MiB "
                   "([run] conv_workspace_mib)", cfg->run.conv_workspace_mib);
            if (cfg->run.conv_workspace_reuse && least >= 0)
                printf(", less what fits in the activation memory dead during each convolution (at least %.1f MiB "
                       "there for every one: [run] conv_workspace_reuse)", least / 1048576.0);
            printf("\n");
        }
    }
    bf_model_destroy(m);
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
    }
    /* the plan needs no images, but a start does: said here rather than found at the start */
    const bf_dataset_kind ds = cfg->data.dataset;
    if (!cfg->data.path[0] &&
        (ds == BF_DATASET_IMAGEFOLDER || ds == BF_DATASET_IMAGENET100 || ds == BF_DATASET_IMAGENET))
        printf("note: [data] path is empty: a training start needs it (dataset = %s reads its images from there)\n",
               train->name);
    return BF_EXIT_OK;
}

/* What record_run writes into the run directory. */
typedef struct run_record {
    const bf_config *cfg;
    int argc;
    char **argv;
} run_record;

/* Keeps the resolved config beside the metrics, so a run directory documents itself, and one line
 * per start (version, host, time, command) so a resumed run keeps its history. Called by rank 0
 * once the run has started (bf_train_options.started): after a resume has loaded, so a refused
 * --resume leaves the config of the run it refused to continue. */
static void record_run(void *user) {
    const run_record *rec = user;
    const bf_config *cfg = rec->cfg;
    if (bf_mkdir_p(cfg->run.dir) != BF_OK) return;
    char path[BF_PATH_MAX + 32], started[160];
    describe_start(started, sizeof started);
    snprintf(path, sizeof path, "%s/config.ini", cfg->run.dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "# %s\n", started);
        bf_config_print(cfg, f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/invocations.log", cfg->run.dir);
    if ((f = fopen(path, "a"))) {
        fprintf(f, "%s:", started);
        for (int i = 0; i < rec->argc; i++) /* quoted where a shell would need it, so the line can be rerun */
            fprintf(f, strpbrk(rec->argv[i], " \t'\"$\\;&|<>*?()") ? " '%s'" : " %s", rec->argv[i]);
        fputc('\n', f);
        fclose(f);
    }
}

int main(int argc, char **argv) {
    /* Line-buffered even into a file (a Slurm log): stdout and stderr lines then keep their order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    bf_cli cli;
    int rc = bf_cli_parse(argc, argv, "bioflex-train", usage, &cli);
    if (rc != BF_EXIT_OK) return rc;
    if (cli.help) {
        fputs(usage, stdout);
        return BF_EXIT_OK;
    }
    if (cli.version) {
        printf("bioflex-train %s (CUDA backend %s)\n", BIOFLEX_VERSION, bf_cuda_built() ? "built" : "not built");
        return BF_EXIT_OK;
    }
    if (cli.help_config) {
        bf_config_print_reference(stdout);
        return BF_EXIT_OK;
    }
    if (cli.checkpoint) { /* bioflex-eval's option: a run meant to continue would silently start afresh */
        fprintf(stderr, "bioflex-train: --checkpoint is a bioflex-eval option; to continue a run use --resume DIR\n\n%s",
                usage);
        return BF_EXIT_USAGE;
    }
    if (bf_cli_analysis_option(&cli) || cli.results) {
        fprintf(stderr, "bioflex-train: %s is a bioflex-eval option (of a checkpoint)\n\n%s",
                cli.results ? "--results" : bf_cli_analysis_option(&cli), usage);
        return BF_EXIT_USAGE;
    }
    bf_config cfg;
    rc = bf_cli_load_config(&cli, &cfg);
    if (rc != BF_EXIT_OK) return rc;
    int lead = bf_comm_launcher_rank() == 0; /* under mpirun/srun only rank 0 prints and writes */
    if (lead && cli.dry_run) {
        printf("# resolved configuration (%s)\n", cfg.source);
        bf_config_print(&cfg, stdout);
    } else if (lead) { /* every key would bury the progress lines: config.ini in the run directory has them */
        bf_config_print_changed(&cfg, stdout);
        printf("\n");
    }
    if (cli.dry_run) return dry_run(&cfg);

    run_record record = {.cfg = &cfg, .argc = argc, .argv = argv};
    bf_train_options opt = {.resume = cli.resume, .quiet = 0, .log = stdout, .stop = &stop_signal,
                            .started = record_run, .started_user = &record};
    bf_train_result result;
    catch_stop_signals();
    bf_status s = bf_train(&cfg, &opt, &result);
    if (s != BF_OK) {
        fprintf(stderr, "\nerror: %s\n", bf_last_error());
        return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
    }
    if (result.interrupted) /* the run printed where it stopped and how to continue */
        return 128 + (stop_signal ? stop_signal : SIGTERM); /* another rank's signal stopped this one */
    if (lead && cfg.fragments.network != 0) /* Net Fragments: its evaluation printed its table */
        printf("line reconstruction at a 1-pixel gap: %.4f (%d lines, %d epochs, %ld lines trained)\n",
               result.final_eval.top1, result.final_eval.samples, result.epochs_done, result.steps_done);
    else if (lead && cfg.butd.network != 0) /* BU-TD: one accuracy (the mean over tasks when guided), no top-5 */
        printf("test accuracy: %.2f%%%s, loss %.4f (%d images, %d epochs, %ld steps)\n", 100 * result.final_eval.top1,
               cfg.butd.guided ? " (mean over tasks)" : "", result.final_eval.loss, result.final_eval.samples,
               result.epochs_done, result.steps_done);
    else if (lead)
        printf("test accuracy: %.2f%% top-1, %.2f%% top-5, loss %.4f (%d images, %d epochs, %ld steps)\n",
               100 * result.final_eval.top1, 100 * result.final_eval.top5, result.final_eval.loss,
               result.final_eval.samples, result.epochs_done, result.steps_done);
    return BF_EXIT_OK;
}

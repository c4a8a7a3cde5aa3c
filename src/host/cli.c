/* cli.c - argument parsing shared by the programs. */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

static int usage_error(const char *program, const char *usage, const char *what, const char *arg) {
    fprintf(stderr, "%s: %s%s%s\n\n%s", program, what, arg ? " " : "", arg ? arg : "", usage);
    return BF_EXIT_USAGE;
}

int bf_cli_parse_int(const char *text, long lo, long hi, long *value) {
    char *end = NULL;
    errno = 0;
    const long n = strtol(text, &end, 10);
    if (!*text || *end || errno == ERANGE || n < lo || n > hi) return 0;
    *value = n;
    return 1;
}

void bf_cli_outputs(const bf_cli *cli, const char *flag[BF_CLI_OUTPUTS], const char *path[BF_CLI_OUTPUTS]) {
    const char *flags[BF_CLI_OUTPUTS] = {"--loss-surface", "--gradient-flow", "--hessian", "--input-hessian",
                                         "--activations", "--attack", "--routing", "--subnetworks", "--results"};
    const char *paths[BF_CLI_OUTPUTS] = {cli->loss_surface, cli->gradient_flow, cli->hessian, cli->input_hessian,
                                         cli->activations, cli->attack, cli->routing, cli->subnetworks, cli->results};
    memcpy(flag, flags, sizeof flags);
    memcpy(path, paths, sizeof paths);
}

/* Two analyses (or one and --results) writing one file: the later would silently replace the
 * earlier's result. Compared as files (bf_same_file), so "g.csv" and "./g.csv" or a link to it are one. */
static int check_distinct_outputs(const bf_cli *cli, const char *program, const char *usage) {
    const char *flag[BF_CLI_OUTPUTS], *path[BF_CLI_OUTPUTS];
    bf_cli_outputs(cli, flag, path);
    for (int i = 0; i < BF_CLI_OUTPUTS; i++)
        for (int j = i + 1; j < BF_CLI_OUTPUTS; j++)
            if (path[i] && path[j] && bf_same_file(path[i], path[j])) {
                fprintf(stderr, "%s: %s %s and %s %s name the same file: each analysis needs an output file of its "
                        "own\n\n%s", program, flag[i], path[i], flag[j], path[j], usage);
                return BF_EXIT_USAGE;
            }
    return BF_EXIT_OK;
}

/* Where the options that take a path keep it (flag is one of them). */
static const char **path_option(bf_cli *cli, const char *flag) {
    if (!strcmp(flag, "--resume")) return &cli->resume;
    if (!strcmp(flag, "--loss-surface")) return &cli->loss_surface;
    if (!strcmp(flag, "--attack")) return &cli->attack;
    if (!strcmp(flag, "--gradient-flow")) return &cli->gradient_flow;
    if (!strcmp(flag, "--input-hessian")) return &cli->input_hessian;
    if (!strcmp(flag, "--hessian")) return &cli->hessian;
    if (!strcmp(flag, "--activations")) return &cli->activations;
    if (!strcmp(flag, "--routing")) return &cli->routing;
    if (!strcmp(flag, "--subnetworks")) return &cli->subnetworks;
    if (!strcmp(flag, "--results")) return &cli->results;
    return &cli->checkpoint;
}

int bf_cli_parse(int argc, char **argv, const char *program, const char *usage, bf_cli *cli) {
    memset(cli, 0, sizeof *cli);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) cli->help = 1;
        else if (!strcmp(a, "--version")) cli->version = 1;
        else if (!strcmp(a, "--dry-run")) cli->dry_run = 1;
        else if (!strcmp(a, "--help-config")) cli->help_config = 1;
        else if (!strcmp(a, "--device") || !strcmp(a, "--gpus") || !strcmp(a, "--set") || !strcmp(a, "--resume") ||
                 !strcmp(a, "--checkpoint") || !strcmp(a, "--loss-surface") || !strcmp(a, "--attack") ||
                 !strcmp(a, "--gradient-flow") || !strcmp(a, "--hessian") || !strcmp(a, "--activations") ||
                 !strcmp(a, "--input-hessian") ||
                 !strcmp(a, "--routing") || !strcmp(a, "--subnetworks") || !strcmp(a, "--results")) {
            if (!value) return usage_error(program, usage, "missing value after", a);
            i++;
            if (!strcmp(a, "--device")) {
                if (strcmp(value, "cpu") && strcmp(value, "cuda") && strcmp(value, "auto"))
                    return usage_error(program, usage, "--device must be cpu, cuda or auto, not", value);
                cli->device = value;
            } else if (!strcmp(a, "--gpus")) {
                long n = 0;
                if (!bf_cli_parse_int(value, 1, 64, &n)) return usage_error(program, usage, "--gpus must be an integer 1..64, not", value);
                cli->gpus = (int)n;
            } else if (!strcmp(a, "--set")) {
                if (cli->num_sets == BF_CLI_MAX_SETS) return usage_error(program, usage, "too many --set options", NULL);
                cli->sets[cli->num_sets++] = value;
            } else { /* a path: given once (a second one silently replaced the first, an analysis' output lost) */
                const char **slot = path_option(cli, a);
                if (*slot) return usage_error(program, usage, "given twice:", a);
                *slot = value;
            }
        } else if (a[0] == '-' && a[1]) {
            return usage_error(program, usage, "unknown option", a);
        } else if (cli->config_path) {
            return usage_error(program, usage, "more than one config file given:", a);
        } else {
            cli->config_path = a;
        }
    }
    if (!cli->help && !cli->version && !cli->help_config && !cli->config_path)
        return usage_error(program, usage, "no config file given", NULL);
    return check_distinct_outputs(cli, program, usage);
}

int bf_cli_load_config(const bf_cli *cli, bf_config *cfg) {
    bf_config_defaults(cfg);
    bf_status s = bf_config_load(cli->config_path, cfg);
    char assignment[64];
    if (s == BF_OK && cli->device) {
        snprintf(assignment, sizeof assignment, "run.device=%s", cli->device);
        s = bf_config_set(cfg, assignment);
    }
    if (s == BF_OK && cli->gpus) {
        snprintf(assignment, sizeof assignment, "run.gpus=%d", cli->gpus);
        s = bf_config_set(cfg, assignment);
    }
    for (int i = 0; i < cli->num_sets && s == BF_OK; i++) s = bf_config_set(cfg, cli->sets[i]);
    /* bioflex-eval scores on one device: the training run's [run] gpus (its config.ini) does not
     * apply, and with --device cpu it would be refused as needing CUDA */
    if (s == BF_OK && cli->checkpoint && cfg->run.gpus != 1) s = bf_config_set(cfg, "run.gpus=1");
    if (s == BF_OK) s = bf_config_validate(cfg);
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : (s == BF_ERR_IO ? BF_EXIT_USAGE : BF_EXIT_RUNTIME);
    }
    return BF_EXIT_OK;
}

const char *bf_cli_analysis_option(const bf_cli *cli) {
    const char *flag[BF_CLI_OUTPUTS], *path[BF_CLI_OUTPUTS];
    bf_cli_outputs(cli, flag, path);
    for (int i = 0; i < BF_CLI_ANALYSES; i++)
        if (path[i]) return flag[i];
    return NULL;
}

/* cli.c - argument parsing shared by the programs. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage_error(const char *program, const char *usage, const char *what, const char *arg) {
    fprintf(stderr, "%s: %s%s%s\n\n%s", program, what, arg ? " " : "", arg ? arg : "", usage);
    return BF_EXIT_USAGE;
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
                 !strcmp(a, "--routing") || !strcmp(a, "--subnetworks")) {
            if (!value) return usage_error(program, usage, "missing value after", a);
            i++;
            if (!strcmp(a, "--device")) {
                if (strcmp(value, "cpu") && strcmp(value, "cuda") && strcmp(value, "auto"))
                    return usage_error(program, usage, "--device must be cpu, cuda or auto, not", value);
                cli->device = value;
            } else if (!strcmp(a, "--gpus")) {
                char *end = NULL;
                long n = strtol(value, &end, 10);
                if (!*value || *end || n < 1 || n > 64) return usage_error(program, usage, "--gpus must be an integer 1..64, not", value);
                cli->gpus = (int)n;
            } else if (!strcmp(a, "--set")) {
                if (cli->num_sets == BF_CLI_MAX_SETS) return usage_error(program, usage, "too many --set options", NULL);
                cli->sets[cli->num_sets++] = value;
            } else if (!strcmp(a, "--resume")) {
                cli->resume = value;
            } else if (!strcmp(a, "--loss-surface")) {
                cli->loss_surface = value;
            } else if (!strcmp(a, "--attack")) {
                cli->attack = value;
            } else if (!strcmp(a, "--gradient-flow")) {
                cli->gradient_flow = value;
            } else if (!strcmp(a, "--input-hessian")) {
                cli->input_hessian = value;
            } else if (!strcmp(a, "--hessian")) {
                cli->hessian = value;
            } else if (!strcmp(a, "--activations")) {
                cli->activations = value;
            } else if (!strcmp(a, "--routing")) {
                cli->routing = value;
            } else if (!strcmp(a, "--subnetworks")) {
                cli->subnetworks = value;
            } else {
                cli->checkpoint = value;
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
    return BF_EXIT_OK;
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
    return cli->loss_surface    ? "--loss-surface"
           : cli->gradient_flow ? "--gradient-flow"
           : cli->hessian       ? "--hessian"
           : cli->input_hessian ? "--input-hessian"
           : cli->activations   ? "--activations"
           : cli->attack        ? "--attack"
           : cli->routing       ? "--routing"
           : cli->subnetworks   ? "--subnetworks"
                                : NULL;
}

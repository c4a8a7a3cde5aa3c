/* cli.h - internal: the command line shared by bioflex-train and bioflex-eval. Exit status:
 * 0 success, 2 a bad command line or config, 1 a runtime failure. */
#ifndef BIOFLEX_CLI_H
#define BIOFLEX_CLI_H

#include "bioflex/config.h"

enum { BF_EXIT_OK = 0, BF_EXIT_RUNTIME = 1, BF_EXIT_USAGE = 2 };

#define BF_CLI_MAX_SETS 64
#define BF_CLI_ANALYSES 8 /* bioflex-eval's analysis options, each with an output file */
#define BF_CLI_OUTPUTS (BF_CLI_ANALYSES + 1) /* and --results, the scores as JSON */

typedef struct bf_cli {
    const char *config_path;
    const char *device;                  /* --device cpu|cuda */
    int gpus;                            /* --gpus N (0 = not given) */
    const char *sets[BF_CLI_MAX_SETS];   /* --set section.key=value, in order */
    int num_sets;
    const char *resume;                  /* --resume DIR (train) */
    const char *checkpoint;              /* --checkpoint DIR (eval) */
    const char *loss_surface;            /* --loss-surface FILE.csv (eval) */
    const char *attack;                  /* --attack FILE.json (eval) */
    const char *gradient_flow;           /* --gradient-flow FILE.csv (eval) */
    const char *hessian;                 /* --hessian FILE.json (eval) */
    const char *input_hessian;           /* --input-hessian FILE.json (eval) */
    const char *activations;             /* --activations FILE.safetensors (eval) */
    const char *routing;                 /* --routing FILE.json (eval) */
    const char *subnetworks;             /* --subnetworks FILE.json (eval, guided BU-TD) */
    const char *results;                 /* --results FILE.json (eval): the printed scores, exactly */
    int dry_run, help, version, help_config;
} bf_cli;

/* Whether text is, as a whole, a decimal integer in [lo, hi] (no trailing characters, no overflow);
 * if so *value gets it. The caller's message names the flag, the text and the range. */
int bf_cli_parse_int(const char *text, long lo, long hi, long *value);

/* Parses argv; on a usage error (two analyses given one output file among them, naming both flags)
 * prints it with the usage text to stderr and returns BF_EXIT_USAGE. */
int bf_cli_parse(int argc, char **argv, const char *program, const char *usage, bf_cli *cli);

/* Loads the config file, applies --device, --gpus and --set in order, and validates; on failure
 * prints the message and returns BF_EXIT_USAGE. */
int bf_cli_load_config(const bf_cli *cli, bf_config *cfg);

/* The first bioflex-eval analysis option given ("--loss-surface", "--gradient-flow", "--hessian",
 * "--input-hessian", "--activations", "--attack", "--routing", then "--subnetworks", the one for
 * guided [butd] networks), or NULL. */
const char *bf_cli_analysis_option(const bf_cli *cli);

/* Every bioflex-eval option that writes a file, its flag and its path (NULL where not given): the
 * analyses in the order above, then "--results". */
void bf_cli_outputs(const bf_cli *cli, const char *flag[BF_CLI_OUTPUTS], const char *path[BF_CLI_OUTPUTS]);

#endif

/* bioflex-eval - accuracy and loss of a checkpoint on the test split of the config's dataset. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bioflex/analysis.h"
#include "bioflex/butd.h"
#include "bioflex/checkpoint.h"
#include "bioflex/fragments_run.h"
#include "bioflex/safetensors.h"
#include "bioflex/train.h"
#include "cli.h"
#include "data_parallel.h"
#include "eval_results.h"
#include "fsutil.h"
#include "task_eval.h"

static const char usage[] =
    "usage: bioflex-eval --checkpoint DIR [--loss-surface FILE.csv] [--gradient-flow FILE.csv]\n"
    "                    [--hessian FILE.json] [--activations FILE.safetensors] [--attack FILE.json]\n"
    "                    [--routing FILE.json] [--input-hessian FILE.json] [--subnetworks FILE.json]\n"
    "                    [--results FILE.json] [--device cpu|cuda|auto] [--set section.key=value]... cfg.ini\n"
    "       bioflex-eval --help | --version\n"
    "\n"
    "  --checkpoint DIR   a checkpoint directory, or a run directory (its latest checkpoint)\n"
    "  --loss-surface FILE.csv  also the loss and top-1 over a plane of weights through the checkpoint's,\n"
    "                     as [analysis] surface_* say (one CSV line per grid point: alpha,beta,loss,top1)\n"
    "  --gradient-flow FILE.csv  also each parameter tensor's gradient size (mean and max |g|, norms) over\n"
    "                     [analysis] gradient_batches training batches (one CSV line per tensor)\n"
    "  --hessian FILE.json  also the top eigenvalues and the trace of the loss's Hessian over\n"
    "                     [analysis] hessian_batches training batches, as [analysis] hessian_* say\n"
    "  --activations FILE.safetensors  also every layer's output for the first [analysis] activation_images\n"
    "                     test images (of the layers activation_layers names), one tensor per layer\n"
    "  --attack FILE.json also top-1 and top-5 under an adversarial attack at each epsilon of a grid, and\n"
    "                     the area under the top-1 curve, as [analysis] attack_* say\n"
    "  --input-hessian FILE.json  also the Hessian of each of the first [analysis] input_hessian_images\n"
    "                     test images' loss with respect to the image: top eigenvalues and Lanczos Ritz values\n"
    "                     (or of the images [analysis] input_hessian_positions names)\n"
    "  --routing FILE.json also where each channel-wise max flex layer's conv won over its pool, per\n"
    "                     element, image, class and channel, over [analysis] routing_batches test batches\n"
    "  --subnetworks FILE.json  guided BU-TD networks: each task's instruction mask (TD activity > 0) per\n"
    "                     gated layer, its active fraction, and each pair of tasks' binary cosine and Jaccard\n"
    "  --results FILE.json  also the scores printed, as JSON: the test split's loss, top-1, top-5 and\n"
    "                     balanced top-1 as fractions with the counts of correct images behind them\n"
    "                     (BU-TD: accuracy, per task when guided), the training split's with eval_train\n"
    "  --device cpu|cuda|auto  backend to evaluate on (default: [run] device)\n"
    "  --set s.k=v        override a config key (e.g. data.test_limit=1000)\n"
    "prints test loss, top-1 and top-5 accuracy (BU-TD networks: accuracy, per task when guided);\n"
    "exit status 0 success, 2 bad command line or config, 1 failure\n";

/* Opens an analysis' output file for writing; the error says why not (no such directory, no
 * permission, ...). */
static bf_status open_output(const char *option, const char *path, FILE **f) {
    *f = fopen(path, "w");
    return *f ? BF_OK : bf_error(BF_ERR_IO, "%s: cannot write %s: %s", option, path, strerror(errno));
}

/* Closes an analysis' output file (f may be NULL: never opened). An analysis that failed leaves no
 * file behind, rather than an empty or partial one that a later script would read as its result. */
static bf_status close_output(FILE *f, const char *option, const char *path, bf_status s) {
    if (f && fclose(f) != 0 && s == BF_OK)
        s = bf_error(BF_ERR_IO, "%s: cannot write %s: %s", option, path, strerror(errno));
    if (f && s != BF_OK) remove(path);
    return s;
}

/* --loss-surface: the plane's losses into path (analysis.h), from the loaded model, over the test
 * loader or ([analysis] surface_split = train) an unshuffled training loader. */
static bf_status write_loss_surface(const bf_config *cfg, bf_model *m, bf_loader *test_loader, const char *path) {
    const bf_analysis_config *a = &cfg->analysis;
    const bf_loss_surface_options o = {.steps = a->surface_steps, .distance = a->surface_distance,
                                       .batches = a->surface_batches,
                                       .directions = (bf_surface_directions)a->surface_directions,
                                       .seed = (uint64_t)a->surface_seed,
                                       .training_mode = a->surface_mode == BF_ANALYSIS_TRAIN};
    bf_dataset *train = NULL;
    bf_loader *loader = test_loader;
    bf_status s = BF_OK;
    if (a->surface_split == 1) {
        bf_loader_options lo = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
        lo.shuffle = 0; /* the first batches in file order: the same images at every point */
        s = bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &train);
        if (s == BF_OK) s = bf_loader_create(train, &lo, &loader);
    }
    FILE *csv = NULL;
    if (s == BF_OK) s = open_output("--loss-surface", path, &csv);
    double center = 0;
    if (s == BF_OK) s = bf_loss_surface(m, loader, cfg->optim.label_smoothing, &o, csv, &center);
    s = close_output(csv, "--loss-surface", path, s);
    if (s == BF_OK)
        printf("loss surface: %d x %d points (%s directions, %s split, %s mode), loss %.4f at the checkpoint's "
               "weights -> %s\n", o.steps, o.steps, o.directions == BF_SURFACE_REFERENCE ? "reference" : "filter_normalized",
               a->surface_split ? "training" : "test", o.training_mode ? "training" : "evaluation", center, path);
    if (loader != test_loader) bf_loader_destroy(loader);
    bf_dataset_free(train);
    return s;
}

/* The checkpoint's weights into m, and with [analysis] bn_recalibrate_batches its batch-norms'
 * running statistics recomputed from that many training batches (bn_recalibrate.c); *used (nullable)
 * gets the batches run. */
static bf_status load_weights(const bf_config *cfg, const char *dir, bf_model *m, int *used) {
    BF_TRY(bf_checkpoint_load_model(dir, m));
    const int batches = cfg->analysis.bn_recalibrate_batches;
    if (batches <= 0) return BF_OK;
    bf_dataset *train = NULL;
    bf_loader *loader = NULL;
    bf_loader_options o = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
    int ran = 0;
    bf_status s = bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &train);
    if (s == BF_OK) s = bf_loader_create(train, &o, &loader);
    if (s == BF_OK) s = bf_model_recalibrate_bn(m, loader, batches, &ran);
    if (used) *used = ran;
    bf_loader_destroy(loader);
    bf_dataset_free(train);
    return s;
}

/* The checkpoint in a model of its own, built as mc says (the config's [model] with a change). */
static bf_status load_as(const bf_config *cfg, const bf_model_config *mc, bf_backend *b, const bf_dataset *test,
                         const char *dir, bf_model **m) {
    bf_config changed = *cfg;
    changed.model = *mc;
    bf_status s = bf_run_build_model(&changed, b, test, 0, m);
    return s == BF_OK ? load_weights(cfg, dir, *m, NULL) : s;
}

/* --activations: the layers' outputs into path (analysis.h), from a model that runs no ReLU inside
 * its batch-norms and residual adds, so that both outputs are there. */
static bf_status write_activations(const bf_config *cfg, bf_backend *b, const char *dir, const bf_dataset *test,
                                   bf_loader *loader, const char *path) {
    bf_model_config unfused = cfg->model;
    unfused.fuse_bn_relu = unfused.fuse_add_relu = 0;
    bf_model *m = NULL;
    int layers = 0;
    bf_status s = load_as(cfg, &unfused, b, test, dir, &m);
    if (s == BF_OK)
        s = bf_dump_activations(m, loader, cfg->analysis.activation_images, cfg->analysis.activation_layers, path, &layers);
    if (s == BF_OK) printf("activations: %d layers of %d images -> %s\n", layers, cfg->analysis.activation_images, path);
    bf_model_destroy(m);
    return s;
}

/* The checkpoint in a model of its own built with input_gradient (model.h): its evaluation-mode
 * backward gives the image's and the parameters' gradients. */
static bf_status load_with_input_gradient(const bf_config *cfg, bf_backend *b, const bf_dataset *test, const char *dir,
                                          bf_model **m) {
    bf_model_config with_gradient = cfg->model;
    with_gradient.input_gradient = 1;
    *m = NULL;
    return load_as(cfg, &with_gradient, b, test, dir, m);
}

/* The model a gradient analysis runs in mode: the evaluated one in training mode, in evaluation mode
 * one with input_gradient. */
static bf_status model_for_mode(const bf_config *cfg, bf_backend *b, const char *dir, const bf_dataset *test,
                                bf_model *evaluated, bf_analysis_mode mode, bf_model **m) {
    *m = evaluated;
    if (mode == BF_ANALYSIS_TRAIN) return BF_OK;
    return load_with_input_gradient(cfg, b, test, dir, m);
}

/* --gradient-flow: the parameters' gradient sizes into path (analysis.h), from the first training
 * batches as training loads them. */
static bf_status write_gradient_flow(const bf_config *cfg, bf_backend *b, const char *dir, const bf_dataset *test,
                                     bf_model *evaluated, const char *path) {
    const bf_analysis_mode mode = (bf_analysis_mode)cfg->analysis.gradient_mode;
    bf_dataset *train = NULL;
    bf_loader *loader = NULL;
    bf_model *m = NULL;
    bf_status s = model_for_mode(cfg, b, dir, test, evaluated, mode, &m);
    if (s == BF_OK) s = bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &train);
    bf_loader_options o = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
    if (s == BF_OK) s = bf_loader_create(train, &o, &loader);
    FILE *csv = NULL;
    if (s == BF_OK) s = open_output("--gradient-flow", path, &csv);
    if (s == BF_OK) s = bf_gradient_flow(m, loader, cfg->optim.label_smoothing, cfg->analysis.gradient_batches, mode, csv);
    s = close_output(csv, "--gradient-flow", path, s);
    if (s == BF_OK)
        printf("gradient flow: %d parameter tensors over %d training batches, %s mode -> %s\n", m->num_params,
               cfg->analysis.gradient_batches, bf_analysis_mode_name(mode), path);
    bf_loader_destroy(loader);
    bf_dataset_free(train);
    if (m != evaluated) bf_model_destroy(m);
    return s;
}

/* --hessian: the Hessian's top eigenvalues and trace into path (analysis.h), over the first training
 * batches as training loads them. */
static bf_status write_hessian(const bf_config *cfg, bf_backend *b, const char *dir, const bf_dataset *test,
                               bf_model *evaluated, const char *path) {
    const bf_analysis_config *a = &cfg->analysis;
    const bf_hessian_options o = {.batches = a->hessian_batches, .top_n = a->hessian_top_n,
                                  .max_iterations = a->hessian_max_iterations, .tolerance = a->hessian_tolerance,
                                  .step = a->hessian_step, .density_iterations = a->hessian_density_iterations,
                                  .seed = (uint64_t)a->hessian_seed, .mode = (bf_analysis_mode)a->hessian_mode};
    bf_dataset *train = NULL;
    bf_loader *loader = NULL;
    bf_model *m = NULL;
    bf_hessian_result *r = calloc(1, sizeof *r);
    bf_status s = r ? model_for_mode(cfg, b, dir, test, evaluated, o.mode, &m) : bf_error(BF_ERR_OOM, "--hessian: out of memory");
    if (s == BF_OK) s = bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &train);
    bf_loader_options lo = bf_loader_options_from_config(cfg, BF_SPLIT_TRAIN);
    if (s == BF_OK) s = bf_loader_create(train, &lo, &loader);
    if (s == BF_OK) s = bf_hessian(m, loader, cfg->optim.label_smoothing, &o, r);
    FILE *f = NULL;
    if (s == BF_OK) s = open_output("--hessian", path, &f);
    if (s == BF_OK) s = bf_hessian_write_json(&o, r, f);
    s = close_output(f, "--hessian", path, s);
    if (s == BF_OK)
        printf("hessian (%s mode): top eigenvalue %.6g, trace %.6g (%d samples), %d Hessian-vector products -> %s\n",
               bf_analysis_mode_name(o.mode), r->top_n ? r->eigenvalues[0] : NAN, r->trace, r->trace_samples,
               r->products, path);
    bf_loader_destroy(loader);
    bf_dataset_free(train);
    if (m != evaluated) bf_model_destroy(m);
    free(r);
    return s;
}

/* --subnetworks: a guided BU-TD checkpoint's instruction masks and their overlaps into path
 * (butd.h), and one line per gated layer on stdout. */
static bf_status write_subnetworks(const bf_butd_subnetworks *r, const char *path) {
    FILE *f = NULL;
    BF_TRY(open_output("--subnetworks", path, &f));
    bf_status s = bf_butd_subnetworks_write_json(r, f);
    s = close_output(f, "--subnetworks", path, s);
    if (s != BF_OK) return s;
    bf_butd_subnetworks_print(r, stdout);
    printf("subnetworks -> %s\n", path);
    return BF_OK;
}

/* --routing: the flex layers' routing statistics into path (analysis.h), on the test loader. */
static bf_status write_routing(const bf_config *cfg, bf_model *m, bf_loader *loader, const char *path) {
    FILE *f = NULL;
    BF_TRY(open_output("--routing", path, &f));
    int layers = 0;
    const char *maps = cfg->analysis.routing_maps;
    bf_status s = bf_routing_statistics(m, loader, cfg->analysis.routing_batches, f, maps, &layers);
    s = close_output(f, "--routing", path, s);
    if (s == BF_OK)
        printf("routing: %d channel-wise max flex layers -> %s%s%s\n", layers, path, *maps ? ", maps -> " : "", maps);
    return s;
}

/* --input-hessian: the test loader's first [analysis] input_hessian_images images, or those
 * input_hessian_positions names, through a model with input_gradient; the results into path
 * (analysis.h). */
static bf_status write_input_hessian(const bf_config *cfg, bf_backend *b, const char *dir, const bf_dataset *test,
                                     bf_loader *loader, const char *path) {
    const bf_analysis_config *a = &cfg->analysis;
    const int chosen = a->num_input_hessian_positions;
    const bf_input_hessian_options o = {.images = chosen ? chosen : a->input_hessian_images,
                                        .positions = chosen ? a->input_hessian_positions : NULL,
                                        .top_n = a->input_hessian_top_n,
                                        .power_steps = a->input_hessian_power_steps,
                                        .lanczos_steps = a->input_hessian_lanczos_steps,
                                        .surface_points = a->input_hessian_surface_points,
                                        .surface_range = a->input_hessian_surface_range,
                                        .seed = (uint64_t)a->hessian_seed};
    bf_model *m = NULL;
    bf_input_hessian_result *r = calloc(1, sizeof *r);
    bf_status s = r ? load_with_input_gradient(cfg, b, test, dir, &m) : bf_error(BF_ERR_OOM, "--input-hessian: out of host memory");
    if (s == BF_OK) s = bf_input_hessian(m, loader, &o, r);
    FILE *f = NULL;
    if (s == BF_OK) s = open_output("--input-hessian", path, &f);
    if (s == BF_OK) s = bf_input_hessian_write_json(&o, r, f);
    s = close_output(f, "--input-hessian", path, s);
    if (s == BF_OK) {
        double top = 0;
        for (int i = 0; i < r->images; i++) top += o.top_n ? r->image[i].eigenvalues[0] : 0;
        printf("input hessian: %d images, %d Hessian-vector products, mean top eigenvalue %.6g -> %s\n", r->images,
               r->products, r->images ? top / r->images : 0.0, path);
    }
    bf_model_destroy(m);
    if (r) bf_input_hessian_free(r);
    free(r);
    return s;
}

/* Every position the key can list is an image bf_input_hessian can take. */
_Static_assert(BF_LIST_MAX <= BF_INPUT_HESSIAN_MAX_IMAGES, "input_hessian_positions holds more images than an input Hessian");

/* [analysis] input_hessian_positions must lie inside the test split: said before the evaluation runs,
 * as a config error. */
static bf_status check_input_hessian_positions(const bf_config *cfg, const bf_dataset *test) {
    const bf_analysis_config *a = &cfg->analysis;
    for (int i = 0; i < a->num_input_hessian_positions; i++)
        if (a->input_hessian_positions[i] >= test->num_samples)
            return bf_error(BF_ERR_CONFIG, "[analysis] input_hessian_positions: position %d is outside the test split "
                            "of %d images (positions 0 to %d)", a->input_hessian_positions[i], test->num_samples,
                            test->num_samples - 1);
    return BF_OK;
}

/* --attack: the test loader's first [analysis] attack_samples images attacked through a model with
 * input_gradient; the results into path (analysis.h). */
static bf_status write_attack(const bf_config *cfg, bf_backend *b, const char *dir, int epoch, const bf_dataset *test,
                              bf_loader *loader, const char *path) {
    const bf_analysis_config *a = &cfg->analysis;
    const bf_attack_options o = {.method = (bf_attack_method)a->attack_method, .domain = (bf_attack_domain)a->attack_domain,
                                 .epsilons = a->attack_epsilons, .epsilon_max = a->attack_epsilon_max,
                                 .pgd_steps = a->attack_pgd_steps, .pgd_step_fraction = a->attack_pgd_step_fraction,
                                 .random_start = a->attack_random_start, .eot_samples = a->attack_eot_samples,
                                 .jitter_scale = a->attack_jitter_scale, .jitter_std = a->attack_jitter_std,
                                 .spsa_delta = a->attack_spsa_delta, .spsa_lr = a->attack_spsa_lr,
                                 .spsa_iterations = a->attack_spsa_iterations, .spsa_samples = a->attack_spsa_samples,
                                 .jsma_gamma = a->attack_jsma_gamma, .onepixel_steps = a->attack_onepixel_steps,
                                 .onepixel_popsize = a->attack_onepixel_popsize, .apgd_steps = a->attack_apgd_steps,
                                 .apgd_restarts = a->attack_apgd_restarts, .apgd_rho = a->attack_apgd_rho,
                                 .samples = a->attack_samples, .seed = (uint64_t)a->attack_seed, .epoch = epoch};
    bf_model *m = NULL;
    bf_attack_result *r = calloc(1, sizeof *r);
    bf_status s = r ? load_with_input_gradient(cfg, b, test, dir, &m) : bf_error(BF_ERR_OOM, "--attack: out of host memory");
    if (s == BF_OK) s = bf_attack(m, loader, &o, r);
    FILE *f = NULL;
    if (s == BF_OK) s = open_output("--attack", path, &f);
    if (s == BF_OK) s = bf_attack_write_json(&o, r, f);
    s = close_output(f, "--attack", path, s);
    if (s == BF_OK) {
        const int last = r->epsilons - 1;
        printf("%s attack (%s domain): %d images, top-1 %.2f%% at epsilon %g, %.2f%% at %.4g, AUC %.4f (normalised %.4f) -> %s\n",
               bf_attack_method_name(o.method), o.domain == BF_ATTACK_REFERENCE ? "reference" : "pixels", r->samples,
               100 * r->top1[0], r->epsilon[0], 100 * r->top1[last], r->epsilon[last], r->auc, r->auc_normalized, path);
    }
    bf_model_destroy(m);
    free(r);
    return s;
}

/* The epoch whose test-split noise the checkpoint's evaluations draw. Weights alone (a directory with
 * model.safetensors only, as tools/convert_reference_checkpoint.py writes) have no state file: 0. */
static bf_status checkpoint_epoch(const char *dir, int *epoch) {
    char path[BF_PATH_MAX + 32];
    struct stat st;
    snprintf(path, sizeof path, "%s/state.safetensors", dir);
    *epoch = 0;
    if (stat(path, &st) == 0) return bf_checkpoint_epoch(dir, epoch);
    fprintf(stderr, "note: %s holds weights alone (no state.safetensors): any test-split input noise is drawn as "
            "at epoch 0\n", dir);
    return BF_OK;
}

/* [run] eval_train: the training split scored as the test split is (its loader options o: no
 * augmentation) into *r, printed as bioflex-train logs it. */
static bf_status score_training_split(const bf_config *cfg, bf_model *m, bf_loader_options o, int epoch,
                                      bf_eval_result *r) {
    bf_dataset *train = NULL;
    bf_loader *loader = NULL;
    bf_status s = bf_run_open_dataset(cfg, BF_SPLIT_TRAIN, &train);
    if (s == BF_OK) s = bf_loader_create(train, &o, &loader);
    if (s == BF_OK) s = bf_evaluate_batches(m, loader, cfg->optim.label_smoothing, epoch, 0, r);
    if (s == BF_OK)
        printf("train: loss %.4f  top-1 %.2f%%  top-5 %.2f%%  balanced %.2f%%  (%d images, [run] eval_train)\n", r->loss,
               100 * r->top1, 100 * r->top5, 100 * r->balanced_top1, r->samples);
    bf_loader_destroy(loader);
    bf_dataset_free(train);
    return s;
}

/* The test split's scores (res) and, with [run] eval_train, the training split's (*train_res; its
 * samples stay 0 without), then the analyses the command line asks for. */
static bf_status evaluate_checkpoint(const bf_config *cfg, const bf_cli *cli, bf_eval_result *res,
                                     bf_eval_result *train_res, char *dir) {
    bf_backend *b = NULL;
    bf_dataset *test = NULL;
    bf_loader *loader = NULL;
    bf_model *m = NULL;
    bf_status s = bf_checkpoint_resolve(cli->checkpoint, dir);
    if (s == BF_OK) s = bf_backend_from_config(cfg, &b);
    if (s == BF_OK) s = bf_run_open_dataset(cfg, BF_SPLIT_TEST, &test);
    if (s == BF_OK && cli->input_hessian) s = check_input_hessian_positions(cfg, test);
    if (s == BF_OK) s = bf_run_build_model(cfg, b, test, 0, &m);
    int recalibrated = 0;
    if (s == BF_OK) s = load_weights(cfg, dir, m, &recalibrated);
    if (s == BF_OK && recalibrated)
        printf("batch-norm running statistics recomputed from %d training batches ([analysis] bn_recalibrate_batches)\n",
               recalibrated);
    int epoch = 0; /* the test noise of the checkpoint's epoch, as the run's evaluation there drew it */
    if (s == BF_OK) s = checkpoint_epoch(dir, &epoch);
    bf_loader_options o = bf_loader_options_from_config(cfg, BF_SPLIT_TEST);
    o.shuffle = 0; /* the whole test split, in order, whatever [run] val_batches says */
    if (s == BF_OK) s = bf_loader_create(test, &o, &loader);
    if (s == BF_OK) s = bf_evaluate_batches(m, loader, cfg->optim.label_smoothing, epoch, 0, res);
    if (s == BF_OK && cfg->run.eval_train) s = score_training_split(cfg, m, o, epoch, train_res);
    if (s == BF_OK && cli->loss_surface) s = write_loss_surface(cfg, m, loader, cli->loss_surface);
    if (s == BF_OK && cli->gradient_flow) s = write_gradient_flow(cfg, b, dir, test, m, cli->gradient_flow);
    if (s == BF_OK && cli->hessian) s = write_hessian(cfg, b, dir, test, m, cli->hessian);
    if (s == BF_OK && cli->activations) s = write_activations(cfg, b, dir, test, loader, cli->activations);
    if (s == BF_OK && cli->attack) s = write_attack(cfg, b, dir, epoch, test, loader, cli->attack);
    if (s == BF_OK && cli->input_hessian) s = write_input_hessian(cfg, b, dir, test, loader, cli->input_hessian);
    if (s == BF_OK && cli->routing) s = write_routing(cfg, m, loader, cli->routing);
    bf_loader_destroy(loader);
    bf_model_destroy(m);
    bf_dataset_free(test);
    if (b) bf_backend_destroy(b);
    return s;
}

/* --results: the scores into path (eval_results.h); a failure leaves no file. */
static bf_status write_results(const char *path, const bf_eval_results *r) {
    FILE *f = NULL;
    bf_status s = open_output("--results", path, &f);
    if (s == BF_OK) s = bf_eval_results_write(f, r);
    s = close_output(f, "--results", path, s);
    if (s == BF_OK) printf("results -> %s\n", path);
    return s;
}

/* Evaluating a checkpoint as another network than it trained (an SNN at another T, say) is a
 * question a researcher may ask, so it is said, not refused. Silent where the checkpoint has no
 * state file (bare weights) or predates the record. */
static void note_other_network(const bf_config *cfg, const char *checkpoint) {
    char dir[BF_PATH_MAX], saved[2048], now[2048], was[1024], is[1024];
    int recorded = 0;
    if (bf_checkpoint_resolve(checkpoint, dir) != BF_OK || bf_checkpoint_network(dir, saved, sizeof saved, &recorded) != BF_OK ||
        !recorded)
        return;
    bf_config_describe_network(cfg, now, sizeof now);
    if (bf_config_phrase_differences(saved, now, was, is, sizeof was) > 0)
        fprintf(stderr, "note: %s was trained as another network: %s; it is evaluated with %s\n", dir, was, is);
}

/* The directory an evaluation of checkpoint directory dir leaves as it is, resolved into run: the
 * run it belongs to (RUN of RUN/checkpoints/NAME; *in_run 1), else dir itself (a converted
 * checkpoint; *in_run 0). */
static bf_status run_directory_of(const char *dir, char *run, size_t cap, int *in_run) {
    *in_run = 0;
    BF_TRY(bf_resolve_path(dir, run, cap));
    char *name = strrchr(run, '/');
    if (!name || name == run) return BF_OK;
    *name = 0; /* run: the checkpoint's parent */
    char *parent = strrchr(run, '/');
    *in_run = parent && strcmp(parent + 1, "checkpoints") == 0;
    if (!*in_run) *name = '/';
    else if (parent == run) parent[1] = 0; /* /checkpoints/NAME: the root */
    else *parent = 0;
    return BF_OK;
}

/* Whether output (an analysis' file) is input, or lies inside input where that is a directory. */
static int overwrites(const char *output, const char *input) {
    struct stat st;
    if (stat(input, &st) != 0 || !S_ISDIR(st.st_mode)) return bf_same_file(output, input);
    char resolved_output[BF_RESOLVED_PATH_MAX], resolved_input[BF_RESOLVED_PATH_MAX];
    return bf_resolve_path(output, resolved_output, sizeof resolved_output) == BF_OK &&
           bf_resolve_path(input, resolved_input, sizeof resolved_input) == BF_OK &&
           bf_path_is_within(resolved_output, resolved_input);
}

/* What an analysis' output must not touch in the run a checkpoint belongs to: its checkpoints and
 * the files bioflex-train writes there. A new file beside them (RUN/attack.json) is the
 * researcher's to write; a checkpoint in no run keeps its own directory whole. */
static const char *const run_owned[] = {"checkpoints", "config.ini", "invocations.log", "metrics.jsonl",
                                        "spikes.jsonl", "fragments_results.jsonl"};

/* Whether the resolved output path lies in what the run (or the lone checkpoint directory) `run` owns. */
static int inside_run_files(const char *resolved, const char *run, int in_run) {
    if (!in_run) return bf_path_is_within(resolved, run);
    for (size_t k = 0; k < sizeof run_owned / sizeof *run_owned; k++) {
        char owned[BF_RESOLVED_PATH_MAX + 32];
        snprintf(owned, sizeof owned, "%s/%s", strcmp(run, "/") == 0 ? "" : run, run_owned[k]);
        if (bf_path_is_within(resolved, owned)) return 1;
    }
    return 0;
}

/* An analysis' output that would replace what the evaluation reads (--checkpoint's path, also a
 * weights file in no checkpoint directory, the config file, [model] init_weights or static_routing,
 * [data] class_list or val_labels), or what the checkpoint's run holds (its checkpoints, the files
 * bioflex-train writes there; checkpoint_dir NULL when it did not resolve, which the evaluation then
 * reports), or be another analysis' output, is refused before anything runs: printed, BF_EXIT_USAGE. */
static int check_output_paths(const bf_cli *cli, const bf_config *cfg, const char *checkpoint_dir) {
    const char *flag[BF_CLI_OUTPUTS + 1], *path[BF_CLI_OUTPUTS + 1];
    bf_cli_outputs(cli, flag, path);
    flag[BF_CLI_OUTPUTS] = "[analysis] routing_maps"; /* --routing's second output */
    path[BF_CLI_OUTPUTS] = cli->routing && cfg->analysis.routing_maps[0] ? cfg->analysis.routing_maps : NULL;
    const char *input_name[] = {"--checkpoint", "the config file", "[model] init_weights", "[model] static_routing",
                                "[data] class_list", "[data] val_labels"};
    /* the checkpoint as read: the directory --checkpoint resolves to (a run's: its checkpoints/...,
     * not the whole run, whose new files are allowed), else the path as given (a weights file) */
    const char *input[] = {checkpoint_dir ? checkpoint_dir : cli->checkpoint, cli->config_path, cfg->model.init_weights, cfg->model.static_routing,
                           cfg->data.class_list, cfg->data.val_labels};
    char run[BF_RESOLVED_PATH_MAX];
    int in_run = 0;
    const int have_run = checkpoint_dir && run_directory_of(checkpoint_dir, run, sizeof run, &in_run) == BF_OK;
    for (int i = 0; i <= BF_CLI_OUTPUTS; i++) {
        if (!path[i]) continue;
        char resolved[BF_RESOLVED_PATH_MAX];
        if (have_run && bf_resolve_path(path[i], resolved, sizeof resolved) == BF_OK &&
            inside_run_files(resolved, run, in_run)) {
            if (in_run)
                fprintf(stderr, "bioflex-eval: %s %s would write into the checkpoints or the files of run %s (its "
                        "checkpoints/, config.ini, invocations.log, metrics.jsonl, spikes.jsonl, "
                        "fragments_results.jsonl): give another path (a new file in the run directory is fine)\n",
                        flag[i], path[i], run);
            else
                fprintf(stderr, "bioflex-eval: %s %s lies inside checkpoint directory %s: give a path outside it\n",
                        flag[i], path[i], run);
            return BF_EXIT_USAGE;
        }
        for (size_t k = 0; k < sizeof input / sizeof *input; k++)
            if (input[k][0] && overwrites(path[i], input[k])) {
                fprintf(stderr, "bioflex-eval: %s %s would overwrite %s %s, which this evaluation reads: give another "
                        "output path\n", flag[i], path[i], input_name[k], input[k]);
                return BF_EXIT_USAGE;
            }
        if (i == BF_CLI_OUTPUTS)
            for (int j = 0; j < BF_CLI_OUTPUTS; j++)
                if (path[j] && bf_same_file(path[i], path[j])) {
                    fprintf(stderr, "bioflex-eval: %s %s and %s %s name the same file: each analysis needs an output "
                            "file of its own\n", flag[i], path[i], flag[j], path[j]);
                    return BF_EXIT_USAGE;
                }
    }
    return BF_EXIT_OK;
}

int main(int argc, char **argv) {
    /* Line-buffered even into a file (a Slurm log): stdout and stderr lines then keep their order. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    bf_cli cli;
    int rc = bf_cli_parse(argc, argv, "bioflex-eval", usage, &cli);
    if (rc != BF_EXIT_OK) return rc;
    if (cli.help) {
        fputs(usage, stdout);
        return BF_EXIT_OK;
    }
    if (cli.version) {
        printf("bioflex-eval %s (CUDA backend %s)\n", BIOFLEX_VERSION, bf_cuda_built() ? "built" : "not built");
        return BF_EXIT_OK;
    }
    if (!cli.checkpoint) {
        fprintf(stderr, "bioflex-eval: --checkpoint DIR is required\n\n%s", usage);
        return BF_EXIT_USAGE;
    }
    if (cli.resume || cli.dry_run || cli.gpus || cli.help_config) {
        fprintf(stderr, "bioflex-eval: --resume, --dry-run, --gpus and --help-config are bioflex-train options\n\n%s",
                usage);
        return BF_EXIT_USAGE;
    }
    bf_config cfg;
    rc = bf_cli_load_config(&cli, &cfg);
    if (rc != BF_EXIT_OK) return rc;
    bf_eval_result res;
    char dir[BF_PATH_MAX];
    /* Checked here, before any network kind's evaluation reads or writes anything; a checkpoint that
     * does not resolve (or a Net Fragments weights file in no run) is left to the evaluation to report. */
    const int resolved = bf_checkpoint_resolve(cli.checkpoint, dir) == BF_OK;
    rc = check_output_paths(&cli, &cfg, resolved ? dir : NULL);
    if (rc != BF_EXIT_OK) return rc;
    /* weights copied in from another epoch would be scored under this checkpoint's name and with
     * its epoch's test noise: refused, as a resume refuses them */
    if (resolved && bf_checkpoint_check_weights(dir) != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return BF_EXIT_RUNTIME;
    }
    note_other_network(&cfg, cli.checkpoint);
    if (cli.subnetworks && (cfg.butd.network == 0 || cfg.fragments.network != 0 || !cfg.butd.guided)) {
        fprintf(stderr, "bioflex-eval: --subnetworks applies to guided BU-TD networks ([butd] network != none and "
                "guided = true), whose instruction pass selects a sub-network per task; this config has %s\n",
                cfg.butd.network == 0 || cfg.fragments.network != 0 ? "no [butd] network" : "[butd] guided = false");
        return BF_EXIT_USAGE;
    }
    if (cfg.fragments.network != 0) { /* Net Fragments: the robustness sweep of its checkpoint */
        if (bf_cli_analysis_option(&cli) || cli.results) {
            fprintf(stderr, "bioflex-eval: %s applies to [model] and [butd] networks, not [fragments] ones%s\n",
                    cli.results ? "--results" : bf_cli_analysis_option(&cli),
                    cli.results ? " (their results go to RUN/fragments_results.jsonl)" : "");
            return BF_EXIT_USAGE;
        }
        bf_fragments_result fr;
        char results[BF_PATH_MAX];
        bf_status s = bf_fragments_evaluate_checkpoint(&cfg, cli.checkpoint, stdout, &fr, results);
        if (s != BF_OK) {
            fprintf(stderr, "error: %s\n", bf_last_error());
            return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
        }
        printf("results appended to %s/fragments_results.jsonl\n", results);
        return BF_EXIT_OK;
    }
    if (cfg.butd.network != 0 && bf_cli_analysis_option(&cli) && !(cli.subnetworks &&
                                                                   !strcmp(bf_cli_analysis_option(&cli), "--subnetworks"))) {
        fprintf(stderr, "bioflex-eval: %s applies to [model] networks, not [butd] ones\n", bf_cli_analysis_option(&cli));
        return BF_EXIT_USAGE;
    }
    /* --routing measures channel-wise max flex layers: refused before the test split is scored when
     * the config builds none (a static_routing that fixes every site is caught by the analysis) */
    if (cli.routing && cfg.butd.network == 0 && (!cfg.model.flex || cfg.model.flex_joint != 0)) {
        fprintf(stderr, "bioflex-eval: --routing measures channel-wise max flex layers ([model] flex = true, "
                "flex_joint = channelwise_max); this config has %s\n",
                !cfg.model.flex ? "no flex layers ([model] flex = false)" : "the mask joint ([model] flex_joint = mask)");
        return BF_EXIT_USAGE;
    }
    if (cfg.butd.network != 0) { /* a BU-TD network ([butd]): one accuracy, per task when guided */
        bf_task_eval_result tasks = {0};
        bf_butd_subnetworks subnetworks = {0};
        bf_status s = bf_butd_evaluate_checkpoint(&cfg, cli.checkpoint, &res, &tasks, dir,
                                                  cli.subnetworks ? &subnetworks : NULL);
        if (s == BF_OK) {
            printf("checkpoint %s\ntest: loss %.4f  accuracy %.2f%%%s  (%d images)\n", dir, res.loss, 100 * res.top1,
                   cfg.butd.guided ? " (mean over tasks)" : "", res.samples);
            for (int k = 0; cfg.butd.guided && k < tasks.num_tasks; k++)
                printf("  task %d: accuracy %.2f%%  loss %.4f\n", k, 100 * tasks.task_accuracy[k], tasks.task_loss[k]);
        }
        if (s == BF_OK && cli.subnetworks) s = write_subnetworks(&subnetworks, cli.subnetworks);
        if (s == BF_OK && cli.results) {
            const bf_eval_results r = {.checkpoint = dir, .test = &res, .butd = 1,
                                       .tasks = cfg.butd.guided ? &tasks : NULL};
            s = write_results(cli.results, &r);
        }
        bf_butd_subnetworks_free(&subnetworks);
        if (s != BF_OK) {
            fprintf(stderr, "error: %s\n", bf_last_error());
            return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
        }
        return BF_EXIT_OK;
    }
    /* [data] micro_batches: the network took a slice of each training batch at once, and so do the
     * analyses here that run training batches (bn_recalibrate_batches, the loss surface's training
     * split, gradient flow, the Hessian); the evaluation batch defaults to that slice as in training */
    cfg.data.batch_size = bf_data_slice(&cfg.data);
    cfg.data.micro_batches = 1;
    bf_eval_result train_res = {0};
    bf_status s = evaluate_checkpoint(&cfg, &cli, &res, &train_res, dir);
    if (s == BF_OK)
        printf("checkpoint %s\ntest: loss %.4f  top-1 %.2f%%  top-5 %.2f%%  balanced %.2f%%  (%d images)\n", dir,
               res.loss, 100 * res.top1, 100 * res.top5, 100 * res.balanced_top1, res.samples);
    if (s == BF_OK && cli.results) {
        const bf_eval_results r = {.checkpoint = dir, .test = &res, .train = cfg.run.eval_train ? &train_res : NULL};
        s = write_results(cli.results, &r);
    }
    if (s != BF_OK) {
        fprintf(stderr, "error: %s\n", bf_last_error());
        return s == BF_ERR_CONFIG ? BF_EXIT_USAGE : BF_EXIT_RUNTIME;
    }
    return BF_EXIT_OK;
}

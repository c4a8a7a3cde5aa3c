/* analysis.h - analyses of a trained model (PlasticFlex spec sections 6 and 7).
 *
 * Loss surface (section 7.3): the loss and top-1 on a 2-D plane through the trained weights theta,
 * theta + a d1 + b d2 over a grid of (a, b), for two random directions d1, d2 over every parameter
 * (buffers, such as batch-norm's running statistics, are left as they are), scored in evaluation
 * mode or, as the reference did, in training mode.
 *   filter_normalized (the default; Li et al. 2018, "Visualizing the loss landscape of neural nets",
 *     what the reference means to do): d ~ N(0, 1) per element; in a tensor of 2 or more dimensions
 *     each slice along dimension 0 (an output filter or row) is scaled to the norm of the same slice
 *     of theta; 1-D tensors (biases, batch-norm's gamma and beta) get 0. The grid's coefficients run
 *     evenly over [-distance, distance].
 *   reference (PlasticFlex's vendored loss_landscapes random_plane): d ~ U[0, 1); d2 minus its
 *     projection on d1 (one Gram-Schmidt step over all parameters); then each direction filter by
 *     filter as above, 1-D tensors scaled whole to their norm in theta; then each scaled to a norm of
 *     norm(theta) x distance / steps. The coefficients are the integers -steps/2 .. steps - steps/2 - 1,
 *     so the plane spans about +-distance/2 norm(theta) (the reference's serpentine walk, whose
 *     second coordinate is one step off on odd columns, is not reproduced).
 * Both draw from the seed with the counter RNG (hash.h): the same directions on every backend. */
#ifndef BIOFLEX_ANALYSIS_H
#define BIOFLEX_ANALYSIS_H

#include <stdint.h>
#include <stdio.h>

#include "bioflex/data.h"
#include "bioflex/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The mode in which an analysis runs the model:
 *   train: as a training step (batch-norm over the batch's own statistics, dropout drawn for the
 *     model's current step), the loss a training step differentiates;
 *   eval: as evaluation (batch-norm's running statistics, no dropout), PyTorch's model.eval(), in
 *     which the reference's analysis suite (and PyHessian's example) took its gradients. It needs a
 *     model built with input_gradient (model.h), whose evaluation-mode backward then also writes
 *     the parameter gradients (bf_model.eval_parameter_gradients). */
typedef enum bf_analysis_mode {
    BF_ANALYSIS_TRAIN = 0,
    BF_ANALYSIS_EVAL = 1,
} bf_analysis_mode;

/* "training" or "evaluation". */
const char *bf_analysis_mode_name(bf_analysis_mode mode);
/* BF_OK when m can be analysed in mode (evaluation: built with input_gradient); else BF_ERR_ARG
 * naming the analysis. */
bf_status bf_analysis_check_mode(const bf_model *m, bf_analysis_mode mode, const char *analysis);

typedef enum bf_surface_directions {
    BF_SURFACE_FILTER_NORMALIZED = 0,
    BF_SURFACE_REFERENCE = 1,
} bf_surface_directions;

typedef struct bf_loss_surface_options {
    int steps;          /* grid points along each direction (>= 2) */
    float distance;
    int batches;        /* loader batches scored per point (0 = the whole split) */
    bf_surface_directions directions;
    uint64_t seed;
    int training_mode;  /* 0: evaluation mode; 1: training mode (each batch's own statistics, dropout) */
} bf_loss_surface_options;

/* d1 and d2 (each m->num_param_floats host floats) for the weights theta (host floats, the model's
 * parameter layout). */
bf_status bf_loss_surface_directions(const bf_model *m, const float *theta, const bf_loss_surface_options *o,
                                     float *d1, float *d2);

/* The coefficient of grid point i (0 .. steps-1) along either direction. */
double bf_loss_surface_coefficient(const bf_loss_surface_options *o, int i);

/* Scores every grid point with bf_evaluate_batches, or in training mode with
 * bf_evaluate_batches_training_mode (train.h; the reference's loss surface: it never called eval()),
 * over the loader's first o->batches batches (use an unshuffled loader so that every point sees the
 * same images) and writes one CSV line per point,
 * "alpha,beta,loss,top1", after '#' comment lines that say what was computed and a header line.
 * The model's parameters are restored exactly afterwards. *center_loss (nullable): the loss at
 * (0, 0) when the grid has that point (an odd steps), else at the point nearest to it. */
bf_status bf_loss_surface(bf_model *m, bf_loader *loader, float label_smoothing, const bf_loss_surface_options *o,
                          FILE *csv, double *center_loss);

/* Gradient flow (section 7.1): how large each parameter tensor's gradient is at the checkpoint's
 * weights. The gradient of the mean cross-entropy (with the config's label smoothing) over the
 * loader's first `batches` batches of epoch 0 (a training loader: shuffled and augmented as training
 * is), in `mode`: train (as one training step would take it) or eval. One CSV line per parameter
 * tensor, "parameter,count,mean_abs_grad,max_abs_grad,grad_norm,weight_norm,grad_to_weight", after a
 * '#' line with the loss and the mode. The reference's mean and max |dL/dw| are the first two (it
 * plots every tensor but biases; it took them in evaluation mode from one batch, with a random fc1).
 * The model comes back as it was (running statistics, batch count, gradients). */
bf_status bf_gradient_flow(bf_model *m, bf_loader *loader, float label_smoothing, int batches, bf_analysis_mode mode,
                           FILE *csv);

/* The gradient of the mean cross-entropy over the loader's first `batches` batches of epoch 0, in the
 * model's mode (in evaluation mode, a model built with input_gradient: its parameter gradients are
 * asked for during the call), into sum (backend memory, the parameters' layout): each batch's mean
 * loss weighs 1/batches (in evaluation mode its random draws are keyed as bf_evaluate keys them: the
 * step BF_EVAL_STEP and the batch's position in the epoch). *loss: the summed per-sample loss, *samples: the images. Leaves m->grad_data
 * holding the last batch's gradient and the model at that batch size; an error when the split has
 * fewer batches. */
bf_status bf_mean_gradient(bf_model *m, bf_loader *loader, float label_smoothing, int batches, float *sum, double *loss,
                           int *samples);

/* Hessian (section 7.2, PyHessian's algorithms): of the mean cross-entropy over the loader's first
 * `batches` batches (a training loader: shuffled and augmented as training is, the same images at
 * every pass) with respect to every trained parameter, in `mode`: eval (PyHessian's and the
 * reference's model.eval(): running statistics, no dropout; a model built with input_gradient) or
 * train (batch statistics; dropout drawn for the model's current step at every pass: the loss of one
 * training step, fixed).
 *   top eigenvalues: power iteration with deflation, from a Gaussian start made orthonormal to the
 *     eigenvectors already found; v <- H v / |H v|; stops when the Rayleigh quotient v'Hv changes by
 *     less than `tolerance` relatively, or after max_iterations (PyHessian: 5, 1e-3, 100);
 *   trace: Hutchinson's mean of v'Hv over Rademacher v, until the running mean changes by less than
 *     `tolerance`, or max_iterations samples.
 * H v is a central difference of gradients along the unit direction v, (g(theta + step v) -
 * g(theta - step v)) / (2 step), two gradient passes, where PyHessian takes exact double-backward
 * products: across a ReLU's or max-pool's kink the difference sees what the exact product ignores,
 * so a smaller step is closer to PyHessian's while float rounding limits it from below (a spiking
 * network's gradient is a surrogate, and its differences jump wherever the step flips a spike). The
 *   spectral density (density_iterations > 0): stochastic Lanczos quadrature, one run of that many
 *     Lanczos steps from a Rademacher vector with full reorthogonalisation (a random restart where
 *     the Krylov space is exhausted); nodes = the tridiagonal matrix's eigenvalues, weights = the
 *     squared first components of its eigenvectors (PyHessian: 100 steps). It keeps every Lanczos
 *     vector on the host: density_iterations x the parameters x 4 bytes.
 * The reference took its Hessian with a random fc1. The model comes back as it was. */
#define BF_HESSIAN_MAX_TOP 64
#define BF_HESSIAN_MAX_DENSITY 1000

typedef struct bf_hessian_options {
    int batches, top_n, max_iterations;
    double tolerance, step;
    int density_iterations;    /* 0: no spectral density */
    uint64_t seed;
    bf_analysis_mode mode;
} bf_hessian_options;

typedef struct bf_hessian_result {
    int top_n;
    double eigenvalues[BF_HESSIAN_MAX_TOP];
    int iterations[BF_HESSIAN_MAX_TOP];
    double trace;
    int trace_samples;
    int density_points;        /* = density_iterations */
    double density_nodes[BF_HESSIAN_MAX_DENSITY], density_weights[BF_HESSIAN_MAX_DENSITY];
    int products;              /* Hessian-vector products taken (two gradient passes each) */
    double loss;               /* the mean loss at theta */
    int samples;               /* the images of those batches */
} bf_hessian_result;

bf_status bf_hessian(bf_model *m, bf_loader *loader, float label_smoothing, const bf_hessian_options *o,
                     bf_hessian_result *out);
bf_status bf_hessian_write_json(const bf_hessian_options *o, const bf_hessian_result *r, FILE *f);

/* The input-space Hessian (FlexNet spec section 5.4): for each of the loader's first `images` images
 * (an unshuffled test loader), the Hessian of its cross-entropy (no label smoothing) with respect to
 * the image as the model takes it (normalised), in evaluation mode at batch 1: its top_n eigenvalues
 * by power iteration with deflation, power_steps products each (FlexNet's top 2, 50 steps), and the
 * Ritz values of lanczos_steps steps of Lanczos from a random unit vector without
 * re-orthogonalisation, stopped where beta < 1e-6 (FlexNet's 50; the spectra it pools and
 * compares). The products are exact, J'(diag(p) - pp')J v from the logits' Jacobian J (K backward
 * passes per image; input_hessian.c says why): the whole Hessian of a piecewise-linear network (ReLU,
 * max-pool, evaluation batch-norm, channel-wise max flex), as FlexNet's double backprop takes it, and
 * the Gauss-Newton part for one with smooth layers. The model must be built with input_gradient.
 * With surface_points > 0 (and top_n >= 2), also the loss over the plane x + alpha v1 + beta v2
 * through the image along the top two eigenvectors (FlexNet 5.4 b: 51 points from -10 to 10 in
 * normalised input units): surface_points^2 losses per image, alpha by rows. With positions, the
 * images are those of the split instead, in the order given (FlexNet's probes, chosen from a pool by
 * tools/plot_analysis.py --select-probes): each image's results are the same as where it is among
 * the first ones (its seed and draws are keyed by its position). */
#define BF_INPUT_HESSIAN_MAX_IMAGES 64
#define BF_INPUT_HESSIAN_MAX_RITZ 200
#define BF_INPUT_HESSIAN_MAX_SURFACE 201

typedef struct bf_input_hessian_options {
    int images, top_n, power_steps, lanczos_steps;
    const int *positions;      /* NULL: the loader's first `images` images; else the split positions of the
                                  `images` images, any order, each >= 0 and inside the split */
    int surface_points;        /* 0: no loss surface */
    float surface_range;
    uint64_t seed;
} bf_input_hessian_options;

typedef struct bf_input_hessian_image {
    uint64_t position;         /* the image's place in the split */
    int label;
    int predicted;             /* the top logit's class (ties: the lowest), as top-1 counts it */
    double loss;
    double eigenvalues[BF_HESSIAN_MAX_TOP];
    int iterations[BF_HESSIAN_MAX_TOP];
    double ritz[BF_INPUT_HESSIAN_MAX_RITZ]; /* largest first */
    int ritz_count;
} bf_input_hessian_image;

typedef struct bf_input_hessian_result {
    int images, products;
    bf_input_hessian_image image[BF_INPUT_HESSIAN_MAX_IMAGES];
    float *surface;            /* images x surface_points^2 losses (malloc'd; bf_input_hessian_free), or NULL */
} bf_input_hessian_result;

bf_status bf_input_hessian(bf_model *m, bf_loader *loader, const bf_input_hessian_options *o,
                           bf_input_hessian_result *out);
bf_status bf_input_hessian_write_json(const bf_input_hessian_options *o, const bf_input_hessian_result *r, FILE *f);
void bf_input_hessian_free(bf_input_hessian_result *r);

/* Activations (section 7.4, what its intermediate plots show, for any analysis): every chosen layer's
 * output for the loader's first `images` images (an unshuffled test loader), in evaluation mode,
 * into a safetensors file: "input" [images, C, H, W] (normalised as the model takes it), "labels"
 * (I32), and one F32 tensor per layer under its name, [images, C, H, W] ([images, features, 1, 1]
 * after a flatten), or [T, images, ...] inside a spiking network's time steps. layers: comma-separated
 * name prefixes ("" or NULL = every layer). A chosen flex layer also gets "<layer>.flex_conv", its
 * convolution's output (with its bias) before the joint: the conv branch FlexNet's Brain-Score
 * probes read (flexnet.md 5.5). A batch-norm's or residual add's own output is read before a ReLU
 * after it runs in place: build the model with fuse_bn_relu = 0 (fuse_add_relu = 0) for the two to
 * differ. *kept_layers: how many
 * layers the file holds. */
bf_status bf_dump_activations(bf_model *m, bf_loader *loader, int images, const char *layers, const char *path,
                              int *kept_layers);

/* Routing (FlexNet spec section 6, its evaluation-time routing statistics; manuscript Fig 6): where
 * each channel-wise max flex layer chose its conv branch, over the loader's first `batches` batches
 * (0 = the whole split; use an unshuffled test loader), in evaluation mode. The conv wins an
 * element when C > P~ strictly (a tie, C == P~, counts for neither). Per layer, as JSON:
 *   conv: the fraction of all its elements (images x C x H x W, and time steps inside a spiking
 *     network) the conv won; p_conv(c, h, w): that fraction per element, over the images;
 *   always_conv, always_pool: the fractions of elements with p_conv > 0.95, < 0.05; static_share
 *     their sum (the rest choose by input: the manuscript's "routing determinism");
 *   per_image_mean, per_image_std: of each image's conv fraction; per_class: its mean over each
 *     class's images; per_channel: each output channel's conv fraction (a filter's commitment).
 * Mask-joint flex layers are listed by name and joint alone (their masks are not kept). maps_path
 * (nullable or ""): the p_conv maps, F32 [C, H, W] named after their layers, in a safetensors file.
 * *layers: the channel-wise max layers measured; an error when the model has none. */
bf_status bf_routing_statistics(bf_model *m, bf_loader *loader, int batches, FILE *json, const char *maps_path,
                                int *layers);

/* Adversarial attacks (section 6 and recommendation 9.6): the test images attacked at each epsilon
 * of a grid from 0 to epsilon_max, and the model's top-1 and top-5 on the results.
 *   fgsm: x + epsilon sign(grad), clamped to the pixel range;
 *   pgd (L-inf, as torchattacks' PGD): from a uniform point of the epsilon ball (random_start) or x,
 *     pgd_steps steps of pgd_step_fraction x epsilon along sign(grad), each projected on the epsilon
 *     ball around x and the pixel range;
 *   gaussian_noise: x + N(0, epsilon^2) per pixel, clamped to the pixel range;
 *   spgd (the reference's "super PGD"): PGD with the reference's wider grid (epsilon up to 0.5);
 *   jitter (torchattacks' Jitter, Schwinn et al. 2021): PGD's steps along the sign of the gradient of
 *     another loss, the squared distance between the label's one-hot and the softmax of the logits
 *     scaled to a largest magnitude of jitter_scale, plus N(0, jitter_std^2) noise per logit
 *     (attack_loss.h); for an image already misclassified that loss is divided by the L-inf norm of
 *     its perturbation (in the attack's [0, 1] units), through which it has a gradient too;
 *   spsa (torchattacks' SPSA, after advertorch; gradient-free): spsa_iterations steps (0: the
 *     reference's int(40 epsilon)) of Adam (learning rate spsa_lr, PyTorch's betas) on the
 *     perturbation, each from the mean over spsa_samples draws of v in {-1, 1}^pixels of
 *     (f(x + delta v) - f(x - delta v)) v / (2 delta), f = the label's logit minus the best other
 *     (delta = spsa_delta); after each step the perturbation is clamped to the epsilon ball and the
 *     pixel range. delta, the learning rate and the ball are in pixels of [0, 1] images, as
 *     epsilon is (domains below);
 *   jsma (torchattacks' JSMA, Papernot et al. 2016; an L0 attack): towards the class (label + 1)
 *     mod K, rounds that each raise by theta = epsilon the two pixels (among those below 0.99 at the
 *     start and not raised yet) with the largest alpha |beta|, alpha > 0 the pair's sum of the target
 *     logit's input gradient and beta < 0 that of the other logits', until the model predicts the
 *     target or ceil(jsma_gamma x pixels / 2) rounds; where no pair qualifies the image stops
 *     (torchattacks then raises pixel 0 twice, its argmax of an all-zero map);
 *   onepixel (torchattacks' OnePixel, Su et al. 2019; an L0 attack whose epsilon counts pixels, its
 *     grid from 1): per image, differential evolution over the positions and values of max(1,
 *     int epsilon) pixels, onepixel_steps generations and a population from onepixel_popsize (0 and
 *     0: PlasticFlex's int(2 epsilon) and int(epsilon); FlexNet's were 100 and 400), minimising the
 *     label's softmax probability and stopping once the best candidate is misclassified
 *     (attack_onepixel.c);
 *   apgd (Auto-PGD, Croce and Hein 2020, as torchattacks' APGD: L-inf, cross-entropy; FlexNet's
 *     comparison): from a random point of the ball, apgd_steps steps of PGD with momentum 0.75, the
 *     step 2 epsilon at first and halved per image at checkpoints (after 22 % of the steps, then
 *     ever closer) where the loss rose in at most apgd_rho of the steps since the last checkpoint or
 *     the best loss did not improve, the search then resuming from the best point; only the images
 *     the model classifies correctly are attacked (apgd_restarts times), and an image fooled at any
 *     step is scored at that point (attack_apgd.c).
 * grad is the gradient of the summed cross-entropy with respect to the image, through the model in
 * evaluation mode (running statistics; spiking networks through time with their surrogate; rate
 * coding straight through), summed over eot_samples forward passes with their own random draws.
 * Domains:
 *   pixels (the default, what the reference means): epsilon is in pixels of the [0, 1] image; the
 *     attack works on the normalised input the model takes, with the step, the ball and the range
 *     [0, 1] mapped through the dataset's normalisation channel by channel;
 *   reference (PlasticFlex's attack_batch): the batch is min-max scaled to [0, 1] over all its values,
 *     x01 = (x - min) / (max - min), the attack runs on x01 with the model queried on x01 itself, and
 *     the model is scored on x01_adv / 0.99999 x (max - min) + min (at epsilon 0 too); Gaussian noise
 *     is not clamped. Its epsilon is thus (max - min) x epsilon in normalised units, and the batch
 *     (eval_batch_size) matters.
 * Evaluation passes draw as bf_evaluate's (BF_EVAL_STEP, the sample's position), so the clean point
 * equals bioflex-eval's score of the same images; gradient passes (and SPSA's forwards) draw from
 * steps of their own. The random starts, the noise, Jitter's logit noise and SPSA's v are keyed by the
 * sample's place in the split: any batching draws the same. (torchattacks' SPSA shares one v among
 * the images of a batch; each image's estimate has the same distribution either way.) */
typedef enum bf_attack_method {
    BF_ATTACK_FGSM = 0,
    BF_ATTACK_PGD = 1,
    BF_ATTACK_GAUSSIAN_NOISE = 2,
    BF_ATTACK_SPGD = 3,
    BF_ATTACK_JITTER = 4,
    BF_ATTACK_SPSA = 5,
    BF_ATTACK_JSMA = 6,
    BF_ATTACK_ONEPIXEL = 7,
    BF_ATTACK_APGD = 8
} bf_attack_method;
typedef enum bf_attack_domain { BF_ATTACK_PIXELS = 0, BF_ATTACK_REFERENCE = 1 } bf_attack_domain;

#define BF_ATTACK_MAX_EPSILONS 1000

typedef struct bf_attack_options {
    bf_attack_method method;
    bf_attack_domain domain;
    int epsilons;              /* grid points, 0 .. epsilon_max evenly (2 .. BF_ATTACK_MAX_EPSILONS) */
    float epsilon_max;         /* 0: bf_attack_preset_epsilon_max */
    int pgd_steps;             /* pgd, spgd, jitter */
    float pgd_step_fraction;
    int random_start;
    float jitter_scale;        /* jitter: the logits' largest magnitude before the softmax (10) */
    float jitter_std;          /* jitter: the noise added to the softmax (0.1) */
    float spsa_delta;          /* spsa: the finite difference's half step (0.01) */
    float spsa_lr;             /* spsa: Adam's learning rate (0.01) */
    int spsa_iterations;       /* spsa: Adam steps (0: int(40 epsilon), the reference's) */
    int spsa_samples;          /* spsa: draws of v per gradient estimate (128) */
    float jsma_gamma;          /* jsma: the largest fraction of the pixels raised (0.1) */
    int onepixel_steps;        /* onepixel: generations (0: int(2 epsilon), PlasticFlex's) */
    int onepixel_popsize;      /* onepixel: torchattacks' popsize (0: int(epsilon), PlasticFlex's) */
    int apgd_steps;            /* apgd: iterations (FlexNet's 100) */
    int apgd_restarts;         /* apgd: random starts for the images not fooled yet (1) */
    float apgd_rho;            /* apgd: the step halves where the loss rose in at most rho of a check's steps (0.75) */
    int eot_samples;
    int samples;               /* the split's first N images (0 = all) */
    uint64_t seed;
    int epoch;                 /* the loader epoch read (its test noise, if any: bioflex-eval's checkpoint epoch) */
} bf_attack_options;

typedef struct bf_attack_result {
    int samples, epsilons;
    double epsilon[BF_ATTACK_MAX_EPSILONS], top1[BF_ATTACK_MAX_EPSILONS], top5[BF_ATTACK_MAX_EPSILONS];
    double auc;                /* the trapezoid area under top-1 over epsilon */
    double auc_normalized;     /* ... divided by epsilon_max: the mean top-1 over the range */
    double auc_reference;      /* the reference's, with a spacing of epsilon_max / epsilons (attacks.py:216) */
} bf_attack_result;

/* The reference's largest epsilon for a method: fgsm 0.64, pgd 23/255, gaussian_noise 0.42, spgd 0.5,
 * jitter 0.3, spsa 0.21, jsma 1.5, onepixel 42, apgd 0.01 (FlexNet's). */
float bf_attack_preset_epsilon_max(bf_attack_method method);
/* Where a method's grid starts: 0 (the clean images), onepixel 1 (one pixel). */
float bf_attack_epsilon_min(bf_attack_method method);
const char *bf_attack_method_name(bf_attack_method method);

/* Attacks the loader's images (an unshuffled test loader, its first o->samples) on a model built
 * with input_gradient (model.h), in evaluation mode; the model's mode, step and batch come back. */
bf_status bf_attack(bf_model *m, bf_loader *loader, const bf_attack_options *o, bf_attack_result *out);

/* The options and results as one JSON object. */
bf_status bf_attack_write_json(const bf_attack_options *o, const bf_attack_result *r, FILE *f);

#ifdef __cplusplus
}
#endif

#endif

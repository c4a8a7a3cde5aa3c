/* test_input_hessian.c - bf_input_hessian (analysis.h) on a small CNN (batch-norm, ReLU, max-pool) of
 * 3 classes over generated 8x8 images, against the Hessian's nonzero eigenvalues computed here
 * another way: the logits' Jacobian A by one single-image backward pass per class, then the
 * eigenvalues of A A' (diag(p) - p p'), a 3 x 3 matrix of rank 2 whose two nonzero eigenvalues are
 * those of H = A'(diag(p) - p p')A:
 *   - the top two eigenvalues (power iteration) and the top two Ritz values (Lanczos) match them,
 *     Lanczos stopping within 3 steps (H has rank 2);
 *   - the loss is the image's cross-entropy;
 *   - a model of batch 8 and one of batch 5 give the same results;
 *   - the loss surface along the top two eigenvectors: its centre is the image's loss, and its
 *     second difference along the first, (L(a) - 2 L(0) + L(-a)) / a^2, the top eigenvalue where the
 *     network is smooth around the image;
 *   - each image's predicted class is the top logit of a forward of its own (the lowest on ties), and
 *     the JSON says it with "correct" (the 16 images hold both kinds);
 *   - chosen positions (13, 2, 15, 3, 10: out of order, in batches 0, 2 and the short last one of 5) give
 *     each image the very results it gets among the first 16 (the surfaces to rounding: their grid
 *     goes through the network in batches of another size), in the order asked, and positions past
 *     the split's end are refused;
 *   - a model built without input_gradient, and bad options, are refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/analysis.h"
#include "bioflex/config.h"
#include "bioflex/train.h"
#include "testutil.h"

enum { S = 8, K = 3, P = S * S, IMAGES = 3, SPLIT = 16, CHOSEN = 5 };

static bf_config data_config(void) {
    bf_config cfg;
    bf_config_defaults(&cfg);
    cfg.data.dataset = BF_DATASET_PROCEDURAL;
    cfg.data.procedural_size = S;
    cfg.data.procedural_classes = K;
    cfg.data.procedural_channels = 1;
    cfg.data.procedural_train = 8;
    cfg.data.procedural_test = 16;
    cfg.data.batch_size = 8;
    return cfg;
}

static bf_model *build(bf_backend *b, int input_gradient, int batch) {
    bf_model_config mc = bf_test_cnn_config(4, 8, 0);
    mc.batchnorm = 1;
    mc.input_gradient = input_gradient;
    bf_model *m = NULL;
    CHECK_OK(bf_model_build(b, &mc, (bf_shape){batch, 1, S, S}, K, 11, &m));
    return m;
}

static bf_loader *loader_of(const bf_dataset *d, int batch) {
    bf_config cfg = data_config();
    cfg.data.batch_size = batch;
    bf_loader_options lo = bf_loader_options_from_config(&cfg, BF_SPLIT_TEST);
    lo.shuffle = 0;
    bf_loader *l = NULL;
    CHECK_OK(bf_loader_create(d, &lo, &l));
    return l;
}

/* The two nonzero eigenvalues (largest first), the loss of image x (host) with this label, and the
 * class of its top logit (the first of equal ones). */
static void reference(bf_model *m, const float *x_host, int label, double *lambda, double *loss, int *predicted) {
    bf_backend *b = m->backend;
    float *x = bf_test_upload(b, x_host, P), *dlogits = bf_test_alloc(b, K);
    float A[K][P], z[K];
    m->training = 0; /* evaluation mode: the running statistics */
    CHECK_OK(bf_model_set_batch(m, 1));
    for (int k = 0; k < K; k++) {
        const float *logits = NULL;
        float onehot[K] = {0};
        onehot[k] = 1;
        CHECK_OK(bf_model_forward(m, x, &logits));
        CHECK_OK(bf_to_host(b, z, logits, sizeof z));
        CHECK_OK(bf_to_device(b, dlogits, onehot, sizeof onehot));
        CHECK_OK(bf_model_backward(m, dlogits));
        CHECK_OK(bf_to_host(b, A[k], m->dinput, sizeof A[k]));
    }
    *predicted = z[1] > z[0] ? 1 : 0;
    if (z[2] > z[*predicted]) *predicted = 2;
    double p[K], total = 0, top = fmax(fmax(z[0], z[1]), z[2]);
    for (int k = 0; k < K; k++) total += p[k] = exp(z[k] - top);
    for (int k = 0; k < K; k++) p[k] /= total;
    *loss = log(total) - (z[label] - top);
    double G[K][K], GM[K][K];
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            G[i][j] = 0;
            for (int q = 0; q < P; q++) G[i][j] += (double)A[i][q] * A[j][q];
        }
    for (int i = 0; i < K; i++)
        for (int j = 0; j < K; j++) {
            GM[i][j] = 0;
            for (int q = 0; q < K; q++) GM[i][j] += G[i][q] * ((q == j ? p[q] : 0) - p[q] * p[j]);
        }
    /* eigenvalues 0, l1, l2: l1 + l2 = trace, l1 l2 = the sum of the principal 2 x 2 minors */
    const double t = GM[0][0] + GM[1][1] + GM[2][2];
    const double e2 = GM[0][0] * GM[1][1] - GM[0][1] * GM[1][0] + GM[0][0] * GM[2][2] - GM[0][2] * GM[2][0] +
                      GM[1][1] * GM[2][2] - GM[1][2] * GM[2][1];
    const double root = sqrt(fmax(t * t - 4 * e2, 0));
    lambda[0] = (t + root) / 2, lambda[1] = (t - root) / 2;
    CHECK_OK(bf_model_set_batch(m, m->input_shape.n));
    bf_free(b, x), bf_free(b, dlogits);
}

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    bf_config cfg = data_config();
    bf_dataset *test = NULL;
    CHECK_OK(bf_dataset_open(&cfg.data, 3, BF_SPLIT_TEST, &test));
    if (test) test->mean[0] = 0.3f, test->std[0] = 0.2f;
    bf_model *m = b ? build(b, 1, 8) : NULL, *m5 = b ? build(b, 1, 5) : NULL, *plain = b ? build(b, 0, 8) : NULL;
    if (!m || !m5 || !plain || !test) return bf_test_finish();
    /* running statistics of their own, the same in both models */
    for (size_t i = 0; i < m->num_buffer_floats; i += 2) {
        const float v = (float)(0.1 * (i % 7) + (i % 2 ? 0.5 : 0.0));
        CHECK_OK(b->ops->fill(b, m->buffer_data + i, v, 1));
    }
    CHECK_OK(b->ops->copy(b, m5->param_data, m->param_data, m->num_param_floats * sizeof(float)));
    CHECK_OK(b->ops->copy(b, m5->buffer_data, m->buffer_data, m->num_buffer_floats * sizeof(float)));
    bf_loader *l = loader_of(test, 8), *l5 = loader_of(test, 5);

    const bf_input_hessian_options o = {.images = IMAGES, .top_n = 2, .power_steps = 50, .lanczos_steps = 20, .seed = 3};
    static bf_input_hessian_result r, r5;
    CHECK_OK(bf_input_hessian(m, l, &o, &r));
    CHECK_OK(bf_input_hessian(m5, l5, &o, &r5));
    CHECK(r.images == IMAGES, "%d images analysed", r.images);

    float images[IMAGES * P]; /* the first images as the model takes them */
    int labels[IMAGES];
    bf_batch *batch = NULL;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    CHECK_OK(bf_loader_next(l, &batch, NULL));
    if (!batch) return bf_test_finish();
    memcpy(images, batch->images, sizeof images);
    for (int i = 0; i < IMAGES; i++) labels[i] = batch->labels[i];
    bf_loader_release(l, batch);
    for (int i = 0; i < r.images; i++) {
        double lambda[2], loss;
        int predicted;
        const bf_input_hessian_image *img = &r.image[i];
        reference(m, images + i * P, labels[i], lambda, &loss, &predicted);
        CHECK(img->label == labels[i] && img->position == (uint64_t)i, "image %d: label %d, position %llu", i, img->label,
              (unsigned long long)img->position);
        CHECK_CLOSE(img->loss, loss, 1e-9, 1e-6, "the loss is the image's cross-entropy");
        CHECK(img->predicted == predicted, "image %d: predicted %d, its own forward's top logit %d", i, img->predicted,
              predicted);
        CHECK(lambda[0] > 1e-4, "image %d: a curvature worth measuring (%g)", i, lambda[0]);
        CHECK_CLOSE(img->eigenvalues[0], lambda[0], 1e-9, 1e-4, "the top eigenvalue (power iteration)");
        CHECK_CLOSE(img->eigenvalues[1], lambda[1], 1e-6 * lambda[0], 1e-3, "the second eigenvalue (power iteration)");
        CHECK(img->ritz_count >= 2 && img->ritz_count <= 3, "image %d: Lanczos stops within 3 steps (%d)", i, img->ritz_count);
        CHECK_CLOSE(img->ritz[0], lambda[0], 1e-9, 1e-4, "the top Ritz value");
        CHECK_CLOSE(img->ritz[1], lambda[1], 1e-6 * lambda[0], 1e-3, "the second Ritz value");
        CHECK(memcmp(img, &r5.image[i], sizeof *img) == 0, "image %d: a model of batch 5 gives the same", i);
    }

    bf_input_hessian_options with_surface = o;
    with_surface.surface_points = 3, with_surface.surface_range = 0.02f;
    static bf_input_hessian_result surface;
    CHECK_OK(bf_input_hessian(m, l, &with_surface, &surface));
    for (int i = 0; surface.surface && i < surface.images; i++) {
        const float *L = surface.surface + 9 * i; /* alpha -0.1, 0, 0.1 by rows; beta by columns */
        const double curvature = ((double)L[7] - 2.0 * L[4] + L[1]) / (0.02 * 0.02);
        CHECK_CLOSE(L[4], surface.image[i].loss, 1e-6, 1e-5, "the surface's centre is the image's loss");
        if (i < 2) /* image 2 lies on a kink of the network (its second difference grows as 1 / a); a = 0.02
                    * keeps images 0 and 1 within one linear piece, and float losses 1 % apart */
            CHECK_CLOSE(curvature, surface.image[i].eigenvalues[0], 1e-6, 0.05, "the surface's curvature along v1 is the top eigenvalue");
    }
    CHECK(surface.surface != NULL, "the surfaces were kept");
    bf_input_hessian_free(&surface);

    /* The whole split as the first images (a loader of 8), against a forward of each image of its
     * own, and the chosen positions through batches of 5 against it. */
    float split_images[SPLIT * P];
    int split_labels[SPLIT], seen = 0;
    CHECK_OK(bf_loader_start_epoch(l, 0, 0));
    while (seen < SPLIT && bf_loader_next(l, &batch, NULL) == BF_OK && batch) {
        memcpy(split_images + (size_t)seen * P, batch->images, (size_t)batch->n * P * sizeof(float));
        for (int i = 0; i < batch->n; i++) split_labels[seen + i] = batch->labels[i];
        seen += batch->n;
        bf_loader_release(l, batch);
    }
    CHECK(seen == SPLIT, "the test split holds %d images (%d read)", SPLIT, seen);
    bf_input_hessian_options whole = with_surface;
    whole.images = SPLIT;
    static bf_input_hessian_result all, chosen;
    CHECK_OK(bf_input_hessian(m, l, &whole, &all));
    int right = 0, wrong = 0;
    for (int i = 0; i < all.images && seen == SPLIT; i++) {
        double lambda[2], loss;
        int predicted;
        reference(m, split_images + i * P, split_labels[i], lambda, &loss, &predicted);
        CHECK(all.image[i].predicted == predicted, "image %d: predicted %d, its own forward's top logit %d", i,
              all.image[i].predicted, predicted);
        CHECK_CLOSE(all.image[i].loss, loss, 1e-9, 1e-6, "the loss of each of the split's images");
        right += predicted == split_labels[i], wrong += predicted != split_labels[i];
    }
    CHECK(right > 0 && wrong > 0, "the split holds correctly (%d) and wrongly (%d) classified images", right, wrong);

    static const int positions[CHOSEN] = {13, 2, 15, 3, 10}; /* batch 1 of 5 passed over */
    bf_input_hessian_options pick = with_surface;
    pick.images = CHOSEN, pick.positions = positions;
    CHECK_OK(bf_input_hessian(m5, l5, &pick, &chosen));
    CHECK(chosen.images == CHOSEN, "%d chosen images analysed", chosen.images);
    for (int i = 0; i < chosen.images && all.images == SPLIT; i++) {
        const bf_input_hessian_image *img = &chosen.image[i], *first = &all.image[positions[i]];
        CHECK(img->position == (uint64_t)positions[i] && img->label == split_labels[positions[i]],
              "slot %d: position %llu (want %d), label %d (want %d)", i, (unsigned long long)img->position,
              positions[i], img->label, split_labels[positions[i]]);
        CHECK(memcmp(img, first, sizeof *img) == 0, "position %d: the results it gets among the first images (loss %.9g "
              "vs %.9g, top eigenvalue %.9g vs %.9g)", positions[i], img->loss, first->loss, img->eigenvalues[0],
              first->eigenvalues[0]);
        /* The surface's 9 points go through the network in batches of the model's (8 + 1 here, 5 + 4
         * in m5), and OpenBLAS's sgemm need not give a row the same bits in products of another
         * number of rows (an AVX-512 machine's did not: 1 ulp): the same values to rounding. */
        for (int k = 0; k < 9 && chosen.surface && all.surface; k++)
            CHECK_CLOSE(chosen.surface[9 * i + k], all.surface[9 * positions[i] + k], 1e-6, 1e-5,
                        "a chosen position's surface: the one it gets among the first images");
    }
    char *json = NULL;
    size_t json_size = 0;
    FILE *memory = open_memstream(&json, &json_size);
    CHECK_OK(memory ? bf_input_hessian_write_json(&pick, &chosen, memory) : BF_ERR_IO);
    if (memory) fclose(memory);
    for (int i = 0; json && i < chosen.images; i++) {
        char want[160];
        const bf_input_hessian_image *img = &chosen.image[i];
        snprintf(want, sizeof want, "{\"position\": %d, \"label\": %d, \"predicted\": %d, \"correct\": %s, \"loss\": ",
                 positions[i], img->label, img->predicted, img->predicted == img->label ? "true" : "false");
        CHECK(strstr(json, want) != NULL, "the JSON has %s", want);
    }
    free(json);
    bf_input_hessian_free(&all), bf_input_hessian_free(&chosen);
    static bf_input_hessian_result refused;
    static const int past_end[] = {3, SPLIT}, past_last_batch[] = {SPLIT + 1}, negative[] = {-1};
    pick = o, pick.images = 2, pick.positions = past_end;
    CHECK(bf_input_hessian(m, l, &pick, &refused) == BF_ERR_ARG && strstr(bf_last_error(), "position 16 is past the end"),
          "a position past the split is refused: %s", bf_last_error());
    pick.images = 1, pick.positions = past_last_batch; /* inside the short last batch's span: 15 + 5 */
    CHECK(bf_input_hessian(m5, l5, &pick, &refused) == BF_ERR_ARG && strstr(bf_last_error(), "position 17 is past the end"),
          "a position past the last (short) batch is refused: %s", bf_last_error());
    pick.positions = negative;
    CHECK(bf_input_hessian(m, l, &pick, &refused) == BF_ERR_ARG, "a negative position is refused");

    CHECK(bf_input_hessian(plain, l, &o, &refused) == BF_ERR_ARG && strstr(bf_last_error(), "input_gradient"),
          "a model without input_gradient is refused: %s", bf_last_error());
    bf_input_hessian_options bad = o;
    bad.lanczos_steps = BF_INPUT_HESSIAN_MAX_RITZ + 1;
    CHECK(bf_input_hessian(m, l, &bad, &refused) == BF_ERR_ARG, "too many Lanczos steps are refused");
    bad = o, bad.surface_points = 3, bad.surface_range = 1, bad.top_n = 1;
    CHECK(bf_input_hessian(m, l, &bad, &refused) == BF_ERR_ARG, "a surface needs two eigenvectors");
    bad = o, bad.images = 0;
    CHECK(bf_input_hessian(m, l, &bad, &refused) == BF_ERR_ARG, "0 images are refused");

    bf_loader_destroy(l), bf_loader_destroy(l5);
    bf_model_destroy(m), bf_model_destroy(m5), bf_model_destroy(plain);
    bf_dataset_free(test);
    bf_backend_destroy(b);
    return bf_test_finish();
}

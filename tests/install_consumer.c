/* install_consumer.c - a program outside the source tree that uses the installed bioflex: built by
 * tests/install_tests.sh with `pkg-config --cflags --libs bioflex` against a `cmake --install`
 * prefix. It loads an INI file (inih), runs an op on the CPU backend (OpenMP, the ops table) and
 * checks the values, so a missing header, library or link flag fails the test. */
#include <stdio.h>

#include "bioflex/config.h"
#include "bioflex/ops.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: install_consumer CONFIG.ini\n");
        return 2;
    }
    bf_config cfg;
    if (bf_config_load(argv[1], &cfg) != BF_OK) {
        fprintf(stderr, "config: %s\n", bf_last_error());
        return 1;
    }
    bf_backend *b = NULL;
    if (bf_backend_create_cpu(1, &b) != BF_OK) {
        fprintf(stderr, "backend: %s\n", bf_last_error());
        return 1;
    }
    const float x[4] = {-2.0f, -0.5f, 0.0f, 3.0f}, want[4] = {0, 0, 0, 3.0f};
    float *dx = NULL, *dy = NULL, y[4];
    int ok = bf_alloc(b, sizeof x, (void **)&dx) == BF_OK && bf_alloc(b, sizeof x, (void **)&dy) == BF_OK &&
             bf_to_device(b, dx, x, sizeof x) == BF_OK && b->ops->relu_forward(b, dx, dy, 4) == BF_OK &&
             bf_to_host(b, y, dy, sizeof y) == BF_OK;
    for (int i = 0; ok && i < 4; i++) ok = y[i] == want[i];
    printf("config %s: epochs %d, lr %g; relu: %s\n", argv[1], cfg.run.epochs, (double)cfg.optim.lr, ok ? "ok" : "WRONG");
    bf_free(b, dx);
    bf_free(b, dy);
    bf_backend_destroy(b);
    return ok && cfg.run.epochs == 7 ? 0 : 1;
}

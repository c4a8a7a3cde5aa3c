/* test_train_e2e.c - an end-to-end CPU run on real Fashion-MNIST (the Debian package
 * dataset-fashion-mnist): one epoch of a small CNN on 20,000 training images must reach at least
 * 82% top-1 on 2,000 test images (it reaches about 85-87%; chance is 10%). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bioflex/train.h"
#include "testutil.h"

int main(void) {
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) != 0)
        bf_test_skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
    char dir[] = "/tmp/bioflex_e2e_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    bf_config cfg;
    bf_config_defaults(&cfg);
    CHECK_OK(bf_config_load(BIOFLEX_SOURCE_DIR "/configs/quickstart.ini", &cfg));
    snprintf(cfg.run.dir, sizeof cfg.run.dir, "%s/run", dir);
    cfg.run.device = BF_DEVICE_SEL_CPU;
    cfg.run.epochs = 1;
    cfg.data.train_limit = 20000;
    cfg.data.test_limit = 2000;
    cfg.model.channels[0] = 16;
    cfg.model.channels[1] = 32;
    bf_train_options opt = {.quiet = 1, .log = stdout};
    bf_train_result r;
    CHECK_OK(bf_train(&cfg, &opt, &r));
    printf("Fashion-MNIST, 1 epoch on 20k images: test top-1 %.2f%%, top-5 %.2f%%, loss %.4f\n", 100 * r.final_eval.top1,
           100 * r.final_eval.top5, r.final_eval.loss);
    CHECK(r.final_eval.samples == 2000, "evaluated %d test images", r.final_eval.samples);
    CHECK(r.final_eval.top1 >= 0.82, "test accuracy %.4f >= 0.82", r.final_eval.top1);
    CHECK(r.final_eval.top5 >= 0.98, "top-5 accuracy %.4f >= 0.98", r.final_eval.top5);
    CHECK(r.final_eval.loss < 0.6, "test loss %.4f < 0.6", r.final_eval.loss);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return bf_test_finish();
}

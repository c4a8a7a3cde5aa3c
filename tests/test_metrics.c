/* test_metrics.c - metrics.jsonl's model FLOP utilisation (metrics.c):
 *   - bf_peak_tflops against NVIDIA's published dense peaks (A100 SXM: 19.5 fp32 and 156 TF32
 *     TFLOP/s at 1.41 GHz; H100 SXM: 67 fp32 at its 1.98 GHz and 495 TF32 at 1.83 GHz; L40S: 91.6
 *     TF32 at 2.52 GHz),
 *     0 for an architecture not in the table;
 *   - a train line carries "mfu" when it is known and leaves it out otherwise, and likewise
 *     "device_peak_gib" (a GPU run's) when given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "testutil.h"

static void test_peaks(void) {
    CHECK_CLOSE(bf_peak_tflops(8, 0, 108, 1410000, BF_PRECISION_FP32), 19.5, 0.1, 0, "A100 fp32");
    CHECK_CLOSE(bf_peak_tflops(8, 0, 108, 1410000, BF_PRECISION_TF32), 156.0, 0.5, 0, "A100 TF32");
    CHECK_CLOSE(bf_peak_tflops(9, 0, 132, 1980000, BF_PRECISION_FP32), 67.0, 0.2, 0, "H100 SXM fp32");
    CHECK_CLOSE(bf_peak_tflops(9, 0, 132, 1830000, BF_PRECISION_TF32), 494.7, 0.5, 0, "H100 SXM TF32");
    CHECK_CLOSE(bf_peak_tflops(8, 9, 142, 2520000, BF_PRECISION_TF32), 91.6, 0.1, 0, "L40S TF32");
    CHECK(bf_peak_tflops(7, 0, 80, 1530000, BF_PRECISION_FP32) == 0, "V100 is not in the table: 0");
}

/* The first line of dir/metrics.jsonl. */
static void first_line(const char *dir, char *line, size_t cap) {
    char path[512];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "r");
    line[0] = 0;
    if (f) {
        if (!fgets(line, (int)cap, f)) line[0] = 0;
        fclose(f);
    }
}

static void test_mfu_field(void) {
    for (int known = 0; known <= 1; known++) {
        char dir[] = "/tmp/bioflex_test_metrics_XXXXXX";
        CHECK(mkdtemp(dir) != NULL, "temporary directory");
        bf_metrics_log log;
        CHECK_OK(bf_metrics_open(&log, dir, 0));
        const double peak_gib = 2.75;
        bf_train_metrics m = {.epochs = 1, .step = 10, .steps_per_epoch = 10, .step_in_epoch = 10, .loss = 1, .lr = 0.1,
                              .grad_norm = -1, .ms_per_step = 2, .images_per_s = 500, .tflops = 12.5,
                              .mfu = known ? 0.25 : 0, .device_peak_gib = known ? &peak_gib : NULL};
        bf_metrics_train(&log, &m, NULL);
        bf_metrics_close(&log);
        char line[2048];
        first_line(dir, line, sizeof line);
        CHECK(strstr(line, "\"model_tflops\":12.5") != NULL, "model_tflops logged: %s", line);
        if (known)
            CHECK(strstr(line, "\"mfu\":0.25") != NULL, "mfu logged when known: %s", line);
        else
            CHECK(strstr(line, "\"mfu\"") == NULL, "no mfu when the peak is unknown: %s", line);
        if (known)
            CHECK(strstr(line, "\"device_peak_gib\":2.75") != NULL, "device_peak_gib logged when given: %s", line);
        else
            CHECK(strstr(line, "device_peak_gib") == NULL, "no device_peak_gib on the CPU: %s", line);
        char path[600];
        snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
        unlink(path);
        rmdir(dir);
    }
}

int main(void) {
    test_peaks();
    test_mfu_field();
    return bf_test_finish();
}

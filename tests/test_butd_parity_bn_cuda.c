/* test_butd_parity_bn_cuda.c - the BU-TD batch-norm / BCE parity step against PyTorch
 * (butd_bn_parity.h) on the CUDA backend (skipped, exit 77, without a GPU). */
#include "butd_bn_parity.h"

int main(void) {
    if (bf_cuda_device_count() < 1) bf_test_skip("no CUDA device");
    bf_parity px;
    if (!bf_parity_open(&px, BUTD_BN_FIXTURE, BUTD_BN_SCRIPT, 1)) return bf_test_finish();
    bf_backend *cpu = px.backend, *gpu = NULL;
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &gpu));
    if (gpu) {
        px.backend = gpu;
        run_bn_parity(&px);
        px.backend = cpu;
        bf_backend_destroy(gpu);
    }
    bf_parity_close(&px);
    return bf_test_finish();
}

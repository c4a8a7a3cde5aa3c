/* test_butd_chbn_cuda.c - the checks of test_butd_chbn.c (Counter-Hebb with batch-norm, [butd]
 * ch_bn) on the CUDA backend (skipped, exit 77, without a GPU). */
#include "butd_chbn_cases.h"

int main(void) {
    if (bf_cuda_device_count() < 1) bf_test_skip("no CUDA device");
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cuda(0, BF_PRECISION_FP32, &b));
    if (!b) return bf_test_finish();
    run_chbn_cases(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}

/* test_butd_equivalence.c - BU-TD networks on the CPU backend: Counter-Hebb ops against direct
 * loops, Counter-Hebb = the engine's backprop gradient (shared weights, no BN) for a strided conv
 * net, a guided multi-task conv net against finite differences, separate symmetric weights. */
#include "butd_cases.h"

int main(void) {
    bf_backend *b = NULL;
    CHECK_OK(bf_backend_create_cpu(1, &b));
    if (!b) return bf_test_finish();
    run_butd_cases(b);
    bf_backend_destroy(b);
    return bf_test_finish();
}

/* test_butd_parity_bn.c - the BU-TD batch-norm / BCE parity step against PyTorch (butd_bn_parity.h)
 * on the CPU backend. */
#include "butd_bn_parity.h"

int main(void) {
    bf_parity px;
    if (!bf_parity_open(&px, BUTD_BN_FIXTURE, BUTD_BN_SCRIPT, 1)) return bf_test_finish();
    run_bn_parity(&px);
    bf_parity_close(&px);
    return bf_test_finish();
}

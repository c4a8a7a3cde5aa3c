/* test_conv_pick.c - the rule by which the CUDA convolution search trades a little speed for
 * workspace ([run] conv_workspace_slack, src/kernels/conv_pick.h): on made-up benchmark results
 * (cuDNN's order, fastest first), which algorithm it keeps for a given room (the workspace already
 * held) and slack. The rule is plain C, so it is checked here without a GPU; conv.cu only fills the
 * candidates. */
#include "../src/kernels/conv_pick.h"
#include "testutil.h"

#define MIB ((size_t)1 << 20)

int main(void) {
    /* times 1.00, 1.03, 1.04, 1.20 ms; workspaces 2 GiB, 300 MiB, 0, 0 */
    const bf_conv_candidate c[] = {
        {1.00f, 2048 * MIB, 1}, {1.03f, 300 * MIB, 1}, {1.04f, 0, 1}, {1.20f, 0, 1}};
    CHECK(bf_conv_pick_within_room(c, 4, 4096 * MIB, 0.05f) == 0, "the fastest fits the room: kept");
    CHECK(bf_conv_pick_within_room(c, 4, 2048 * MIB, 0.05f) == 0, "the fastest fits the room exactly: kept");
    CHECK(bf_conv_pick_within_room(c, 4, 512 * MIB, 0.05f) == 1,
          "the fastest needs 2 GiB, 512 MiB held: the 3%% slower one that fits");
    CHECK(bf_conv_pick_within_room(c, 4, 100 * MIB, 0.05f) == 2,
          "100 MiB held: the 4%% slower one without workspace (the 3%% one needs 300 MiB)");
    CHECK(bf_conv_pick_within_room(c, 4, 100 * MIB, 0.035f) == 0,
          "100 MiB held, 3.5%% slack: nothing that fits is fast enough, the fastest");
    CHECK(bf_conv_pick_within_room(c, 4, 512 * MIB, 0.0f) == 0, "slack 0: always the fastest");
    CHECK(bf_conv_pick_within_room(c, 4, 0, 0.25f) == 2, "nothing held, 25%% slack: the fastest without workspace");

    /* unusable results (failed, too much memory for the limit, wrong math or determinism) never count */
    const bf_conv_candidate d[] = {
        {0.50f, 0, 0}, {1.00f, 1024 * MIB, 1}, {1.01f, 0, 0}, {1.02f, 64 * MIB, 1}, {1.03f, 0, 1}};
    CHECK(bf_conv_pick_within_room(d, 5, 0, 0.05f) == 4,
          "the unusable results are skipped, fast or fitting as they are: the usable one without workspace");
    CHECK(bf_conv_pick_within_room(d, 5, 64 * MIB, 0.05f) == 3, "64 MiB held: the faster of the two that fit");
    CHECK(bf_conv_pick_within_room(d, 5, 0, 0.0f) == 1, "slack 0: the first usable result");

    const bf_conv_candidate none[] = {{1.0f, 0, 0}, {2.0f, 0, 0}};
    CHECK(bf_conv_pick_within_room(none, 2, 0, 0.05f) == -1, "nothing usable: -1");
    CHECK(bf_conv_pick_within_room(none, 0, 0, 0.05f) == -1, "no results: -1");

    /* a NaN time (should cuDNN report one) is never within the budget */
    const bf_conv_candidate nan_time[] = {{1.0f, 512 * MIB, 1}, {0.0f / 0.0f, 0, 1}};
    CHECK(bf_conv_pick_within_room(nan_time, 2, 0, 0.5f) == 0, "a NaN time does not qualify");
    return bf_test_finish();
}

/* test_schedule.c - learning-rate schedules against hand-computed values (PyTorch's StepLR,
 * MultiStepLR, CosineAnnealingLR, and a linear warm-up). */
#define _USE_MATH_DEFINES
#include <math.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#include <string.h>

#include "bioflex/train.h"
#include "testutil.h"

int main(void) {
    bf_config c;
    bf_config_defaults(&c);
    c.optim.lr = 0.1f;
    const int spe = 10, epochs = 90;
#define LR(step, epoch) bf_schedule_lr(&c.optim, &c.schedule, step, epoch, spe, epochs)
    c.schedule.type = BF_SCHED_CONSTANT;
    CHECK_CLOSE(LR(500, 50), 0.1, 1e-7, 0, "constant");
    c.schedule.type = BF_SCHED_STEP;
    c.schedule.step_size = 30;
    c.schedule.gamma = 0.1f;
    CHECK_CLOSE(LR(0, 29), 0.1, 1e-7, 0, "step before 30");
    CHECK_CLOSE(LR(0, 30), 0.01, 1e-8, 0, "step at 30");
    CHECK_CLOSE(LR(0, 60), 0.001, 1e-9, 0, "step at 60");
    CHECK_CLOSE(LR(0, 89), 0.001, 1e-9, 0, "step at 89");
    c.schedule.type = BF_SCHED_MULTISTEP;
    c.schedule.milestones[0] = 20;
    c.schedule.milestones[1] = 60;
    c.schedule.num_milestones = 2;
    CHECK_CLOSE(LR(0, 19), 0.1, 1e-7, 0, "multistep before 20");
    CHECK_CLOSE(LR(0, 20), 0.01, 1e-8, 0, "multistep at 20");
    CHECK_CLOSE(LR(0, 60), 0.001, 1e-9, 0, "multistep at 60");
    c.schedule.type = BF_SCHED_COSINE;
    c.schedule.eta_min = 0.001f;
    CHECK_CLOSE(LR(0, 0), 0.1, 1e-7, 0, "cosine start");
    CHECK_CLOSE(LR(0, 45), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine half way");
    CHECK_CLOSE(LR(0, 30), 0.001 + 0.099 * 0.5 * (1 + cos(M_PI / 3)), 1e-7, 1e-6, "cosine at 30/90");
    c.schedule.unit = BF_SCHED_UNIT_STEP;
    CHECK_CLOSE(LR(450, 45), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine per step, half way");
    CHECK(LR(451, 45) < LR(450, 45), "cosine per step decreases within an epoch");
    c.schedule.warmup = 100;
    c.schedule.warmup_start_factor = 0.1f;
    CHECK_CLOSE(LR(0, 0), 0.01, 1e-8, 1e-6, "warm-up start");
    CHECK_CLOSE(LR(50, 5), 0.01 + 0.09 * 0.5, 1e-8, 1e-6, "warm-up middle");
    CHECK_CLOSE(LR(100, 10), 0.1, 1e-7, 1e-6, "cosine starts after warm-up");
    CHECK_CLOSE(LR(500, 50), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine half way through the post-warm-up steps");

    /* The phrase a checkpoint stores names what decides the rate, and only that: a cosine's length
     * is part of it, a step schedule's is not (extending a step-schedule run changes no rate). */
    char phrase[256], other[256];
#define EXPECT_PHRASE(epochs_, want)                                                                 \
    do {                                                                                             \
        bf_schedule_describe(&c.optim, &c.schedule, epochs_, phrase, sizeof phrase);                 \
        CHECK(strcmp(phrase, want) == 0, "schedule phrase \"%s\", expected \"%s\"", phrase, want);    \
    } while (0)
    EXPECT_PHRASE(90, "cosine per step from lr 0.1 to 0.001 over 90 epochs, after 100 steps of linear warm-up from "
                      "0.1 x lr");
    c.schedule.warmup = 0;
    c.schedule.unit = BF_SCHED_UNIT_EPOCH;
    EXPECT_PHRASE(8, "cosine per epoch from lr 0.1 to 0.001 over 8 epochs");
    bf_schedule_describe(&c.optim, &c.schedule, 4, other, sizeof other);
    CHECK(strcmp(phrase, other) != 0, "a cosine over 4 epochs is another schedule than over 8");
    c.schedule.type = BF_SCHED_STEP;
    EXPECT_PHRASE(8, "lr 0.1 times 0.1 every 30 epochs");
    bf_schedule_describe(&c.optim, &c.schedule, 4, other, sizeof other);
    CHECK(strcmp(phrase, other) == 0, "a step schedule is the same whatever the run's length");
    c.schedule.type = BF_SCHED_MULTISTEP;
    EXPECT_PHRASE(8, "lr 0.1 times 0.1 at epoch 20,60");
    c.schedule.type = BF_SCHED_CONSTANT;
    c.optim.lr = 0.002f;
    EXPECT_PHRASE(8, "constant lr 0.002");
    return bf_test_finish();
}

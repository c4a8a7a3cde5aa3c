/* test_schedule.c - learning-rate schedules against hand-computed values (PyTorch's StepLR,
 * MultiStepLR, CosineAnnealingLR, and a linear warm-up). */
#define _USE_MATH_DEFINES
#include <math.h>
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bioflex/train.h"
#include "testutil.h"

int main(void) {
    bf_config c;
    bf_config_defaults(&c);
    c.optim.lr = 0.1f;
    const int spe = 10, epochs = 90;
/* LR(epoch, i): the rate of step i of epoch `epoch` (per step: position epoch * spe + i) */
#define LR(epoch, i) bf_schedule_lr(&c.optim, &c.schedule, epoch, i, spe, epochs)
    c.schedule.type = BF_SCHED_CONSTANT;
    CHECK_CLOSE(LR(50, 0), 0.1, 1e-7, 0, "constant");
    c.schedule.type = BF_SCHED_STEP;
    c.schedule.step_size = 30;
    c.schedule.gamma = 0.1f;
    CHECK_CLOSE(LR(29, 0), 0.1, 1e-7, 0, "step before 30");
    CHECK_CLOSE(LR(30, 0), 0.01, 1e-8, 0, "step at 30");
    CHECK_CLOSE(LR(60, 0), 0.001, 1e-9, 0, "step at 60");
    CHECK_CLOSE(LR(89, 0), 0.001, 1e-9, 0, "step at 89");
    c.schedule.type = BF_SCHED_MULTISTEP;
    c.schedule.milestones[0] = 20;
    c.schedule.milestones[1] = 60;
    c.schedule.num_milestones = 2;
    CHECK_CLOSE(LR(19, 0), 0.1, 1e-7, 0, "multistep before 20");
    CHECK_CLOSE(LR(20, 0), 0.01, 1e-8, 0, "multistep at 20");
    CHECK_CLOSE(LR(60, 0), 0.001, 1e-9, 0, "multistep at 60");
    c.schedule.type = BF_SCHED_COSINE;
    c.schedule.eta_min = 0.001f;
    CHECK_CLOSE(LR(0, 0), 0.1, 1e-7, 0, "cosine start");
    CHECK_CLOSE(LR(45, 0), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine half way");
    CHECK_CLOSE(LR(30, 0), 0.001 + 0.099 * 0.5 * (1 + cos(M_PI / 3)), 1e-7, 1e-6, "cosine at 30/90");
    c.schedule.unit = BF_SCHED_UNIT_STEP;
    CHECK_CLOSE(LR(45, 0), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine per step, half way");
    CHECK(LR(45, 1) < LR(45, 0), "cosine per step decreases within an epoch");
    c.schedule.warmup = 100;
    c.schedule.warmup_start_factor = 0.1f;
    CHECK_CLOSE(LR(0, 0), 0.01, 1e-8, 1e-6, "warm-up start");
    CHECK_CLOSE(LR(5, 0), 0.01 + 0.09 * 0.5, 1e-8, 1e-6, "warm-up middle");
    CHECK_CLOSE(LR(10, 0), 0.1, 1e-7, 1e-6, "cosine starts after warm-up");
    CHECK_CLOSE(LR(50, 0), 0.001 + 0.099 * 0.5, 1e-7, 1e-6, "cosine half way through the post-warm-up steps");

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

    /* Warnings for schedule points past the run's end: each names the key, its value and the length,
     * and a point inside the run gives none. */
    char *text = NULL;
    size_t text_size = 0;
#define WARNINGS(epochs_, spe_, want, needle)                                                         \
    do {                                                                                              \
        FILE *f = open_memstream(&text, &text_size);                                                  \
        c.run.epochs = epochs_;                                                                       \
        const int got = f ? bf_schedule_warn_length(f, &c, spe_) : -1;                                \
        if (f) fclose(f);                                                                             \
        CHECK(got == (want) && (!(needle)[0] || (text && strstr(text, needle))),                      \
              "%d epochs of %d steps: %d warnings, expected %d naming \"%s\": %s", epochs_, spe_, got, want, \
              needle, text ? text : "");                                                              \
        free(text);                                                                                   \
        text = NULL;                                                                                  \
    } while (0)
    c.optim.lr = 0.1f;
    c.schedule.type = BF_SCHED_MULTISTEP; /* milestones 20, 60 */
    WARNINGS(90, 10, 0, "");
    WARNINGS(61, 10, 0, "");
    WARNINGS(60, 10, 1, "milestones 60 lie at or past the run's end (60 epochs, counted from 0: the last is epoch 59)");
    WARNINGS(10, 10, 1, "milestones 20,60 lie");
    c.schedule.unit = BF_SCHED_UNIT_STEP; /* 10 epochs of 10 steps: milestone 20 is inside, 60 too */
    WARNINGS(10, 10, 0, "");
    WARNINGS(5, 10, 1, "milestones 60 lie at or past the run's end (50 steps, counted from 0: the last is step 49)");
    c.schedule.unit = BF_SCHED_UNIT_EPOCH;
    c.schedule.type = BF_SCHED_STEP; /* step_size 30 */
    WARNINGS(31, 10, 0, "");
    WARNINGS(30, 10, 1, "step_size = 30 epochs, but the run is 30 epochs long: the rate never decays");
    c.schedule.type = BF_SCHED_COSINE;
    c.schedule.warmup = 5;
    WARNINGS(6, 10, 0, "");
    WARNINGS(5, 10, 1, "warmup = 5 epochs but the run is 5 epochs long: the rate never reaches [optim] lr = 0.1");
    c.schedule.type = BF_SCHED_MULTISTEP;
    WARNINGS(4, 10, 2, "warmup = 5 epochs");
    /* a decay point inside the warm-up (milestones 20, 60; step_size 30) */
    c.schedule.warmup = 20;
    WARNINGS(90, 10, 1, "milestone 20 lies within warmup = 20 epochs");
    c.schedule.warmup = 19;
    WARNINGS(90, 10, 0, "");
    c.schedule.type = BF_SCHED_STEP;
    c.schedule.warmup = 30;
    WARNINGS(91, 10, 1, "step_size = 30 lies within warmup = 30 epochs");
    return bf_test_finish();
}

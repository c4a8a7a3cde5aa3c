/* schedule.c - the learning rate as a pure function of the training position (see train.h), so
 * that a resumed run continues the schedule exactly where it stopped. */
#include <math.h>

#include "bioflex/train.h"

float bf_schedule_lr(const bf_optim_config *opt, const bf_schedule_config *sched, long step, int epoch,
                     int steps_per_epoch, int total_epochs) {
    int per_step = sched->unit == BF_SCHED_UNIT_STEP;
    double t = per_step ? (double)step : (double)epoch;
    double T = per_step ? (double)total_epochs * steps_per_epoch : (double)total_epochs;
    double lr = opt->lr;
    if (t < sched->warmup) {
        double f = sched->warmup_start_factor + (1.0 - sched->warmup_start_factor) * t / sched->warmup;
        return (float)(lr * f);
    }
    switch (sched->type) {
    case BF_SCHED_CONSTANT:
        break;
    case BF_SCHED_STEP:
        lr *= pow(sched->gamma, floor(t / sched->step_size));
        break;
    case BF_SCHED_MULTISTEP:
        for (int i = 0; i < sched->num_milestones; i++)
            if (t >= sched->milestones[i]) lr *= sched->gamma;
        break;
    case BF_SCHED_COSINE: {
        double u = t - sched->warmup, U = T - sched->warmup;
        double progress = U > 0 ? fmin(u / U, 1.0) : 1.0;
        lr = sched->eta_min + (lr - sched->eta_min) * 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
        break;
    }
    }
    return (float)lr;
}

/* schedule.c - the learning rate as a pure function of the training position (see train.h), so
 * that a resumed run continues the schedule exactly where it stopped. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bioflex/train.h"

float bf_schedule_lr(const bf_optim_config *opt, const bf_schedule_config *sched, int epoch, long step_in_epoch,
                     int steps_per_epoch, int total_epochs) {
    int per_step = sched->unit == BF_SCHED_UNIT_STEP;
    double t = per_step ? (double)epoch * steps_per_epoch + (double)step_in_epoch : (double)epoch;
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

/* %g keeps the phrase short and exact enough to compare: a config's values are floats. */
void bf_schedule_describe(const bf_optim_config *opt, const bf_schedule_config *sched, int total_epochs, char *out,
                          size_t out_size) {
    const char *unit = sched->unit == BF_SCHED_UNIT_STEP ? "step" : "epoch";
    int n = 0;
    switch (sched->type) {
    case BF_SCHED_CONSTANT:
        n = snprintf(out, out_size, "constant lr %g", opt->lr);
        break;
    case BF_SCHED_STEP:
        n = snprintf(out, out_size, "lr %g times %g every %d %ss", opt->lr, sched->gamma, sched->step_size, unit);
        break;
    case BF_SCHED_MULTISTEP:
        n = snprintf(out, out_size, "lr %g times %g at %s", opt->lr, sched->gamma, unit);
        for (int i = 0; i < sched->num_milestones && n >= 0 && (size_t)n < out_size; i++)
            n += snprintf(out + n, out_size - (size_t)n, "%s%d", i ? "," : " ", sched->milestones[i]);
        break;
    case BF_SCHED_COSINE:
        n = snprintf(out, out_size, "cosine per %s from lr %g to %g over %d epochs", unit, opt->lr, sched->eta_min,
                     total_epochs);
        break;
    }
    if (sched->warmup > 0 && n >= 0 && (size_t)n < out_size)
        snprintf(out + n, out_size - (size_t)n, ", after %d %ss of linear warm-up from %g x lr", sched->warmup, unit,
                 sched->warmup_start_factor);
}

void bf_schedule_note_resume(FILE *text, const char *checkpoint, const char *saved, const bf_config *cfg, int epoch,
                             long step_in_epoch, int steps_per_epoch) {
    char now[256];
    bf_schedule_describe(&cfg->optim, &cfg->schedule, cfg->run.epochs, now, sizeof now);
    if (!saved[0] || strcmp(saved, now) == 0) return;
    float lr = bf_schedule_lr(&cfg->optim, &cfg->schedule, epoch, step_in_epoch, steps_per_epoch, cfg->run.epochs);
    fprintf(text, "note: %s was written under the learning-rate schedule \"%s\"; this run's is \"%s\": the rate now "
            "follows this run's, %g at step %ld\n", checkpoint, saved, now, lr,
            (long)epoch * steps_per_epoch + step_in_epoch);
}

/* Where a schedule's key names a point the run never reaches, the rate the researcher planned is
 * not the one the run takes. A warning, not an error: shortening a paper's config for a quick try
 * (--set run.epochs=1) is legitimate, and a run extended later with --resume reaches the point. */
int bf_schedule_warn_length(FILE *text, const bf_config *cfg, int steps_per_epoch) {
    const bf_schedule_config *sc = &cfg->schedule;
    const int per_step = sc->unit == BF_SCHED_UNIT_STEP;
    const long length = per_step ? (long)cfg->run.epochs * steps_per_epoch : (long)cfg->run.epochs;
    const char *unit = per_step ? "step" : "epoch";
    int warnings = 0;
    /* t runs 0 .. length-1: a warm-up of `length` units or more never reaches [optim] lr */
    if (sc->warmup > 0 && sc->warmup >= length) {
        fprintf(text, "warning: [schedule] warmup = %d %ss but the run is %ld %ss long: the rate never reaches "
                "[optim] lr = %g\n", sc->warmup, unit, length, unit, cfg->optim.lr);
        warnings++;
    }
    if (sc->type == BF_SCHED_MULTISTEP) {
        char late[256] = "";
        int n = 0, count = 0;
        for (int i = 0; i < sc->num_milestones; i++) {
            if (sc->milestones[i] < length) continue;
            if (n >= 0 && (size_t)n < sizeof late) n += snprintf(late + n, sizeof late - (size_t)n, "%s%d", count ? "," : "", sc->milestones[i]);
            count++;
        }
        if (count) {
            fprintf(text, "warning: [schedule] milestones %s lie at or past the run's end (%ld %ss, counted from 0: the "
                    "last is %s %ld): the rate is never multiplied by gamma there\n", late, length, unit, unit, length - 1);
            warnings++;
        }
    }
    /* bf_schedule_lr ramps over the warm-up without the decays, then applies every one already
     * passed: a decay point inside the warm-up makes the rate jump from the ramp to the decayed one */
    if (sc->warmup > 0 && ((sc->type == BF_SCHED_MULTISTEP && sc->num_milestones > 0 && sc->milestones[0] <= sc->warmup) ||
                           (sc->type == BF_SCHED_STEP && sc->step_size <= sc->warmup))) {
        fprintf(text, "warning: [schedule] %s %d lies within warmup = %d %ss: the warm-up rises towards [optim] lr = %g "
                "but ends at the decayed rate, which the run then starts from\n",
                sc->type == BF_SCHED_STEP ? "step_size =" : "milestone",
                sc->type == BF_SCHED_STEP ? sc->step_size : sc->milestones[0], sc->warmup, unit, cfg->optim.lr);
        warnings++;
    }
    if (sc->type == BF_SCHED_STEP && sc->step_size >= length) {
        fprintf(text, "warning: [schedule] type = step with step_size = %d %ss, but the run is %ld %ss long: the rate "
                "never decays\n", sc->step_size, unit, length, unit);
        warnings++;
    }
    return warnings;
}

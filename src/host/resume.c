/* resume.c - what a run resumed with --resume checks and says once its checkpoint has loaded
 * (bioflex-train's networks and the BU-TD trainer share it).
 *
 * The data order is a function of the seed, the epoch, the training set and the global batch: a
 * checkpoint inside an epoch goes on with that epoch's permutation from batch k on, which is only
 * the same order when the data and the global batch are the ones the checkpoint was trained with.
 * A checkpoint stores them as one phrase (the "data" metadata); a resume inside an epoch under
 * another phrase is refused, and one at an epoch boundary (the next epoch draws a new permutation)
 * is noted. The learning-rate schedule's phrase is compared the same way (schedule.c). */
#include <stdio.h>
#include <string.h>

#include "bioflex/checkpoint.h"

void bf_resume_describe_data(const char *dataset, int train_samples, int global_batch, const bf_data_config *data,
                             char *out, size_t out_size) {
    char subset[96] = "";
    if (data->subset == 1)
        snprintf(subset, sizeof subset, ", balanced subset of %d per class from seed %ld", data->subset_size,
                 data->subset_seed);
    else if (data->subset == 2)
        snprintf(subset, sizeof subset, ", random subset of %d from seed %ld", data->subset_size, data->subset_seed);
    char generated[64] = ""; /* the partner digits of Multi-(Fashion-)MNIST: another seed, other images */
    if (data->dataset == BF_DATASET_MULTI_MNIST || data->dataset == BF_DATASET_MULTI_FASHION_MNIST)
        snprintf(generated, sizeof generated, ", generated from seed %ld", data->multi_seed);
    snprintf(out, out_size, "%s%s, %d training samples in global batches of %d%s%s", dataset, generated, train_samples,
             global_batch, data->shuffle ? "" : ", in file order", subset);
}

bf_status bf_resume_check(FILE *text, const char *dir, bf_train_state *saved, const char *data_now,
                          int batches_per_epoch, const bf_config *cfg) {
    /* The weights fit this run's shapes (the loads checked), but another neuron, T, flex joint,
     * BU-TD wiring or input scaling would compute something else with them from here on. */
    char network[sizeof saved->network], learning[sizeof saved->learning], was[1024], is[1024];
    bf_config_describe_network(cfg, network, sizeof network);
    bf_config_describe_learning(cfg, learning, sizeof learning);
    if (saved->has_network && bf_config_phrase_differences(saved->network, network, was, is, sizeof was) > 0)
        return bf_error(BF_ERR_CHECKPOINT, "%s was trained as another network: %s, where this run has %s. A resume "
                        "goes on with the same network: resume with the checkpoint's keys, or start a new run from "
                        "its weights with [model] init_weights", dir, was, is);
    const int stopped_after_batch = saved->batch_in_epoch; /* as the checkpoint has it, for the log */
    int data_changed = saved->data[0] && data_now && strcmp(saved->data, data_now) != 0;
    /* a step checkpoint after an epoch's last batch (a stop there, or checkpoint_every_steps) has no
     * order left to continue: this run finishes that epoch (evaluation, epoch checkpoint) at once */
    const int at_epoch_end = saved->batch_in_epoch > 0 && saved->batch_in_epoch == saved->batches_per_epoch;
    if (at_epoch_end) saved->batch_in_epoch = batches_per_epoch;
    if (saved->batch_in_epoch > 0 && data_changed && !at_epoch_end)
        return bf_error(BF_ERR_CHECKPOINT, "%s stopped inside epoch %d (after batch %d) of a run on \"%s\", but this run "
                        "trains on \"%s\": the rest of that epoch's order cannot be continued. Resume with the "
                        "checkpoint's [data] batch_size, dataset, limits, shuffle and subset (the global batch is "
                        "batch_size over all ranks, so the number of ranks may change), or from an epoch checkpoint "
                        "(checkpoints/epoch_NNNN)",
                        dir, saved->epoch + 1, saved->batch_in_epoch, saved->data, data_now);
    /* checkpoints older than the "data" phrase: at least the position must exist in this run */
    if (saved->batch_in_epoch > batches_per_epoch)
        return bf_error(BF_ERR_CHECKPOINT, "%s stopped after batch %d of epoch %d, but this run has %d batches per "
                        "epoch ([data] batch_size, the dataset or the number of ranks changed)", dir,
                        saved->batch_in_epoch, saved->epoch + 1, batches_per_epoch);
    /* said once the checkpoint has passed the checks: a refused resume did not resume */
    if (text && stopped_after_batch > 0)
        fprintf(text, "resumed from %s in epoch %d after batch %d (step %ld)\n", dir, saved->epoch + 1,
                stopped_after_batch, saved->step);
    else if (text)
        fprintf(text, "resumed from %s after epoch %d (step %ld)\n", dir, saved->epoch, saved->step);
    /* a finished run resumed as it was, or with fewer epochs (which does not undo any): it only evaluates */
    if (text && stopped_after_batch == 0 && saved->epoch >= cfg->run.epochs)
        fprintf(text, "note: %s has trained %d epochs and [run] epochs = %d: nothing is left to train, this run only "
                "evaluates it (--set run.epochs=N with N > %d trains on)\n", dir, saved->epoch, cfg->run.epochs,
                saved->epoch);
    if (text && saved->has_network && bf_config_phrase_differences(saved->learning, learning, was, is, sizeof was) > 0)
        fprintf(text, "note: %s learned with %s; this run learns with %s from here on\n", dir, was, is);
    if (text && data_changed)
        fprintf(text, "note: %s was trained on \"%s\"; this run trains on \"%s\": from epoch %d on, the order "
                "follows this run's\n", dir, saved->data, data_now, saved->epoch + 1);
    if (cfg->run.resume_schedule == BF_RESUME_SCHEDULE_RESTART) {
        /* the reference codes' resume: a new scheduler, from its first rate (flexnet.md 3.1,
         * plasticflex.md 5.1; specs/README 9) */
        saved->schedule_epoch = saved->epoch;
        saved->schedule_batch = saved->batch_in_epoch;
        if (text)
            fprintf(text, "note: [run] resume_schedule = restart: the learning-rate schedule starts again here, at %g\n",
                    bf_schedule_lr(&cfg->optim, &cfg->schedule, 0, 0, batches_per_epoch, cfg->run.epochs));
    } else if (text) {
        bf_schedule_note_resume(text, dir, saved->lr_schedule, cfg, saved->epoch - saved->schedule_epoch,
                                saved->batch_in_epoch - saved->schedule_batch, batches_per_epoch);
    }
    return BF_OK;
}

/* memory_plan.c - the memory plan of a built model (bf_memory_plan, called by bf_model_finalize in
 * model_memory.c, which then allocates the arena and points every buffer into it).
 *
 * A training step's largest memory is the activations its forward keeps for the
 * backward. The backward frees them from the top down: once layer t's backward has run, every
 * output of the layers above t is dead (their consumers, all above them, ran before). So the
 * activations that only the step's own passes read ("transient": every output but the logits, a
 * max-pool's argmax) come first in the arena, in layer order, and each output gradient dout(i),
 * live from the backward of its last consumer c down to its own, is placed at the lowest offset
 * above the activations of layers > c that no gradient live at the same time occupies; above the
 * transient activations where none fits (the classifier's first gradients, while everything below
 * is alive). A flex layer's backward scratch is placed the same way, live during that backward
 * alone, and a mask-joint flex layer's forward scratch over the outputs of the layers above it,
 * not yet written during its forward (PlasticFlex's flex VGG-16 on ImageNet-100 at batch 256: the
 * first layer's scratch, six of its conv outputs, had 20 GB of its own). On VGG-16 this puts every gradient but the first few over dead activations, where
 * separate max-size slots cost two of the largest activation (3.1 GiB at batch 128, 224x224). The
 * price: a backward consumes its forward's activations, so a second backward needs a new forward
 * (every caller runs forward, backward, in that order); the logits stay readable after it, and
 * with [spiking] raster_neurons the neuron layers' outputs too (the raster is read after the step).
 *
 * A ReLU runs in place when nothing else reads its input, and after a batch-norm ([model]
 * fuse_bn_relu) or a residual add (fuse_add_relu) that layer runs it (layers.c): the pair's two
 * gradients are then one buffer, the ReLU's, which lives on down to the batch-norm's or add's
 * backward.
 *
 * Spiking networks keep T times the activations, so two more rules apply there. A LIF/IF layer's
 * charge overwrites its input when nothing else reads that input afterwards (its producer's
 * backward reads the producer's own input, not this output). And with [spiking] pack_spikes a
 * neuron layer's spikes, 0 or 1, are kept for the backward as bits in the transient region; the
 * float spikes the next layer's forward reads live only until that forward, over the transient
 * outputs of layers not yet run (or beyond the region), and the first backward that needs them
 * again restores them from the bits into a block placed like a gradient. With [spiking]
 * recompute_charge a LIF/IF layer that alone reads a batch-norm's output keeps no charge at all: its
 * backward computes the charge again from the batch-norm's input, which that batch-norm's backward
 * keeps anyway, and its statistics (neuron_backward_bn), so the batch-norm output, like the float
 * spikes, lives only until the neuron's forward (in training it is not even written: the neuron
 * normalises the batch-norm's input as it reads it, neuron_forward_bn), and with [spiking] fuse_bn_backward
 * that batch-norm runs the neuron's backward with its own, as it runs a ReLU: the pair's gradients
 * are one buffer, the neuron's. On PlasticFlex's VGG-11 at T = 8, batch 256, the
 * charge in place and packed spikes took 46 % off the plan (4.97 -> 2.70 GiB), and the recomputed
 * charge, with the backward's blocks placed largest first (plan_gradients), another third (-> 1.79).
 *
 * Last, the plan replays both passes once more to find, for each layer's forward and backward, the
 * largest block dead during it (plan_workspace_hints); the model hands it to the backend before
 * the layer runs, and a cuDNN convolution whose workspace fits there uses it (conv_workspace_hint
 * in ops.h). */
#include <stdint.h>
#include <stdlib.h>

#include "bioflex/model.h"
#include "layers.h"
#include "memory_plan.h"

static size_t align_up(size_t x) { return bf_arena_align(x); }

/* A ReLU may overwrite its input when nothing else reads that input: every layer kind here
 * computes its backward from its own input (or, for ReLU, its output), never from its output (a
 * flex layer with the channel-wise max tells ties by the bits it keeps; one that applies the next
 * batch-norm's dx reads its output y, but its one consumer is then that batch-norm, not a ReLU). */
static int relu_can_be_in_place(const bf_model *m, const bf_layer *l) {
    if (l->kind != BF_LAYER_RELU || l->input[0] == BF_MODEL_INPUT) return 0;
    return m->layers[l->input[0]].num_consumers == 1;
}

/* Whether in-place ReLU l is run by the batch-norm (the model's fuse_bn_relu) or residual add
 * (fuse_add_relu) before it: that layer is one of its own whose output only this ReLU reads, and the
 * ReLU's output is not the logits (whose gradient the caller owns, and the fused pair shares the
 * ReLU's) and is read by a later layer (else the ReLU has no gradient to share). */
static int relu_can_join_input(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (l->kind != BF_LAYER_RELU || !l->in_place || i == m->num_layers - 1 || l->num_consumers == 0) return 0;
    const bf_layer_kind producer = m->layers[l->input[0]].kind;
    return (m->fuse_bn_relu && producer == BF_LAYER_BATCHNORM) || (m->fuse_add_relu && producer == BF_LAYER_ADD);
}

/* Whether conv i's bias can be left to the batch-norm that alone reads it (the model's
 * fold_conv_bias): a batch-norm's output does not change when a per-channel constant is added to its
 * input, so in training the conv adds none, its bias gradient is exactly 0, and the batch-norm adds
 * momentum * bias to its running mean (layers.c). Its only consumer must be that batch-norm, and the
 * conv's output must not be the model's output. */
static int conv_bias_can_fold(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (!m->fold_conv_bias || l->kind != BF_LAYER_CONV || l->param_index[1] < 0 || l->num_consumers != 1 ||
        i == m->num_layers - 1)
        return 0;
    for (int j = i + 1; j < m->num_layers; j++)
        for (int k = 0; k < m->layers[j].num_inputs; k++)
            if (m->layers[j].input[k] == i) return m->layers[j].kind == BF_LAYER_BATCHNORM && m->layers[j].num_inputs == 1;
    return 0;
}

/* Whether layer l's backward reads the values of its inputs (not only their shapes). */
static int backward_reads_input(const bf_layer *l) {
    switch (l->kind) {
    case BF_LAYER_CONV:
    case BF_LAYER_BATCHNORM:
    case BF_LAYER_LINEAR:
    case BF_LAYER_FLEX:
    case BF_LAYER_DIVNORM:
    case BF_LAYER_DOG:
    case BF_LAYER_LOCAL:
    case BF_LAYER_CIRINCIONE: return 1;
    case BF_LAYER_NEURON: return l->neuron.kind == BF_NEURON_CLAMP01 || l->neuron.kind == BF_NEURON_STEP;
    default: return 0;
    }
}

/* Whether layer l's backward reads its own output: the ReLUs, and a flex layer that applies its batch-norm's dx. */
static int backward_reads_output(const bf_layer *l) {
    return l->kind == BF_LAYER_RELU || l->kind == BF_LAYER_LEAKY_RELU || l->flex_applies_bn;
}

static int is_stateful_neuron(const bf_layer *l) {
    return l->kind == BF_LAYER_NEURON && (l->neuron.kind == BF_NEURON_LIF || l->neuron.kind == BF_NEURON_IF);
}

/* Whether layer i's output (and argmax) is read by this step's passes alone (see the file comment). */
int bf_memory_plan_is_transient(const bf_model *m, int i) {
    if (i == m->num_layers - 1) return 0; /* the logits: the caller's loss and accuracy read them */
    return !(m->keep_neuron_outputs && m->layers[i].kind == BF_LAYER_NEURON);
}

/* Whether neuron layer i may keep its spikes as bits (see the file comment): they are 0 or 1
 * (not CLAMP01's), nothing reads its output after the step, and no consumer aliases it. */
static int can_pack_spikes(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (!m->pack_spikes || l->kind != BF_LAYER_NEURON || l->neuron.kind == BF_NEURON_CLAMP01 || !bf_memory_plan_is_transient(m, i) ||
        l->num_consumers == 0)
        return 0;
    for (int t = i + 1; t < m->num_layers; t++)
        for (int j = 0; j < m->layers[t].num_inputs; j++)
            if (m->layers[t].input[j] == i && m->layers[t].in_place) return 0;
    return 1;
}

/* Whether LIF/IF layer l's charge may overwrite its input: the input is a transient output of a
 * layer of its own (not the image batch, an alias or float spikes about to be reused) that l alone
 * reads, and whose producer's backward does not read it. */
static int charge_can_overwrite_input(const bf_model *m, const bf_layer *l) {
    if (!is_stateful_neuron(l) || l->input[0] == BF_MODEL_INPUT) return 0;
    const bf_layer *in = &m->layers[l->input[0]];
    return !l->charge_recomputed && in->num_consumers == 1 && bf_memory_plan_is_transient(m, l->input[0]) && !in->in_place &&
           !in->spikes_packed && !backward_reads_output(in) && bf_shape_count(in->out_shape) == bf_shape_count(l->out_shape);
}

/* Whether LIF/IF layer l keeps no charge ([spiking] recompute_charge): its input is the output of a
 * batch-norm that l alone reads, whose own input is a float tensor the backward still holds (the
 * image batch, or an output kept in the transient region), and T fits neuron_backward_bn. */
static int charge_can_be_recomputed(const bf_model *m, const bf_layer *l) {
    if (!m->recompute_charge || !is_stateful_neuron(l) || l->neuron.T > BF_NEURON_BN_MAX_T || l->input[0] < 0) return 0;
    const bf_layer *bn = &m->layers[l->input[0]];
    if (bn->kind != BF_LAYER_BATCHNORM || bn->num_consumers != 1 || !bf_memory_plan_is_transient(m, l->input[0])) return 0;
    if (bn->input[0] == BF_MODEL_INPUT) return 1;
    const bf_layer *src = &m->layers[bn->input[0]];
    return !src->spikes_packed && !src->out_forward_only;
}

/* Whether neuron layer i's backward runs inside its input batch-norm's ([spiking] fuse_bn_backward,
 * neuron_batchnorm_backward, layers.c): its charge is recomputed from that batch-norm, which it alone
 * reads and which is the layer just before it (so no other layer runs while the pair's one gradient,
 * planned at the neuron's size, stands for the batch-norm's); the neuron has a gradient of its own
 * to share (it is not the logits, whose gradient the caller owns, and a later layer reads it); and
 * the batch-norm reads the output of a layer that needs its gradient, so the pair has a dx to write. */
static int neuron_can_join_bn(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (!m->fuse_bn_backward || l->kind != BF_LAYER_NEURON || !l->charge_recomputed) return 0;
    if (i == m->num_layers - 1 || l->num_consumers == 0 || !l->needs_grad || l->input[0] != i - 1) return 0;
    const int src = m->layers[l->input[0]].input[0];
    return src >= 0 && m->layers[src].needs_grad;
}

/* The layer whose gradient buffer a batch-norm reads as its dy: its ReLU's when it runs it. */
static int bn_gradient_owner(const bf_model *m, int bn) {
    if (m->layers[bn].relu_fused)
        for (int t = bn + 1; t < m->num_layers; t++)
            if (m->layers[t].relu_joined && m->layers[t].input[0] == bn) return t;
    return bn;
}

/* Whether flex layer i applies the dx of the batch-norm right after it ([model] fuse_flex_bn): a
 * channel-wise max EXPAND flex layer whose backward routes and scatters in one pass
 * (flex_pool_max_backward_scatter_bn: its input needs a gradient, under fuse_flex_scatter) or only
 * routes (flex_pool_max_backward_bn: its input needs none, a network's first layer), read by that
 * batch-norm alone, which is not the logits, whose gradient (or its ReLU's) a later layer writes,
 * and feeds no neuron that reads its input (a spiking network's batch-norm before a LIF layer is
 * that layer's: neuron_batchnorm_backward). */
static int flex_can_apply_bn(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (!m->fuse_flex_bn || l->kind != BF_LAYER_FLEX) return 0;
    if (l->flex_opt.joint != BF_FLEX_JOINT_MAX || l->flex_opt.channels != BF_FLEX_CHANNELS_EXPAND) return 0;
    const int has_dx = l->input[0] >= 0 && m->layers[l->input[0]].needs_grad;
    if ((has_dx && !m->fuse_flex_scatter) || l->num_consumers != 1 || i + 2 >= m->num_layers) return 0;
    const bf_layer *bn = &m->layers[i + 1];
    if (bn->kind != BF_LAYER_BATCHNORM || bn->input[0] != i || !bn->needs_grad || bn->bn_runs_neuron ||
        bn->out_forward_only)
        return 0;
    /* the pair's one gradient is the batch-norm's (or its ReLU's): a later layer must read it */
    return m->layers[bn_gradient_owner(m, i + 1)].num_consumers > 0;
}

/* Whether flex layer i's training forward takes the statistics of the batch-norm right after it
 * ([model] fuse_flex_bn_stats, flex_pool_max_forward_bn_stats): a channel-wise max flex layer (the
 * fused op writes y itself) whose output that batch-norm normalises. Synchronised batch-norm takes
 * its statistics across ranks instead, at run time (layers.c, layer_flex.c). */
static int flex_can_give_bn_stats(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (!m->fuse_flex_bn_stats || l->kind != BF_LAYER_FLEX || l->flex_opt.joint != BF_FLEX_JOINT_MAX) return 0;
    if (i + 1 >= m->num_layers) return 0;
    const bf_layer *bn = &m->layers[i + 1];
    /* the statistics are of the flex output as that batch-norm sees it: its only input */
    return bn->kind == BF_LAYER_BATCHNORM && bn->input[0] == i && bn->num_inputs == 1;
}

/* Whether flex layer i's backward gets its dC beside dy (layer_flex.c): [run] flex_kernels = slide
 * (configured, or set on the backend; a CPU backend has one set of kernels), whose route with the
 * scatter (k_slide_route_scatter) reads dy across its items, so dC must not overwrite it; for the
 * calls that kernel takes: the max joint, EXPAND, [model] fuse_flex_scatter and the 3x3 stride-1
 * pad-1 window. */
static int flex_route_slides(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    if (m->backend && m->backend->kind == BF_DEVICE_CPU) return 0;
    if (l->kind != BF_LAYER_FLEX || !(m->flex_kernels_slide || bf_cuda_flex_kernels_slide(m->backend))) return 0;
    return l->flex_opt.joint == BF_FLEX_JOINT_MAX && l->flex_opt.channels == BF_FLEX_CHANNELS_EXPAND &&
           m->fuse_flex_scatter && l->pool.k == 3 && l->pool.stride == 1 && l->pool.pad == 1;
}

/* Whether layer l's float output lives only until its consumers' forwards (plan_forward_only). */
static int output_is_forward_only(const bf_layer *l) { return l->spikes_packed || l->out_forward_only; }

/* Bytes of packed spikes: one bit per element, in whole 32-bit words. */
size_t bf_memory_plan_spike_bits_bytes(const bf_layer *l) {
    return align_up((bf_shape_count(l->out_shape) + 31) / 32 * sizeof(uint32_t));
}

/* Bytes of layer i's output in the transient region (unless it aliases its input or lives in the
 * forward-only region; packed spikes: their bits) and argmax. */
static size_t output_bytes(const bf_layer *l) {
    size_t bytes = 0, count = bf_shape_count(l->out_shape);
    if (l->spikes_packed) bytes += bf_memory_plan_spike_bits_bytes(l);
    else if (!l->in_place && !l->out_forward_only) bytes += align_up(count * sizeof(float));
    if (l->kind == BF_LAYER_MAXPOOL) bytes += align_up(count * sizeof(int32_t));
    return bytes;
}

/* Bytes of arena that layer i keeps outside the transient region: its output when not transient,
 * and its private buffers (batch-norm's saved statistics, a flex or neuron layer's own). */
static size_t kept_bytes(const bf_model *m, int i) {
    const bf_layer *l = &m->layers[i];
    size_t bytes = bf_memory_plan_is_transient(m, i) ? 0 : output_bytes(l);
    if (l->kind == BF_LAYER_BATCHNORM) /* saved statistics; with bn_in_flex its backward's coefficients */
        bytes += 2 * align_up((size_t)l->bn.c * sizeof(float)) + (l->bn_in_flex ? align_up(2 * (size_t)l->bn.c * sizeof(float)) : 0);
    if (l->kind == BF_LAYER_FLEX) bytes += bf_flex_arena_bytes(l);
    bytes += bf_v1_arena_bytes(l);
    bytes += bf_cirincione_arena_bytes(l);
    bytes += bf_spiking_arena_bytes(l);
    return bytes;
}

/* A block of memory, [lo, hi) in the arena, freed after the backward (the forward, in the
 * forward-only region) of layer `owner`; `gradient`: counted in grad_live_bytes. */
typedef struct placed_block {
    size_t lo, hi;
    int owner, gradient;
} placed_block;

/* The lowest offset >= from where `size` bytes overlap none of the live blocks (a block in the way
 * moves the candidate to its end: every offset in between overlaps that block too). */
static size_t first_fit(const placed_block *live, int n, size_t from, size_t size) {
    size_t at = from;
    for (int moved = 1; moved;) {
        moved = 0;
        for (int k = 0; k < n; k++)
            if (at < live[k].hi && live[k].lo < at + size) {
                at = live[k].hi;
                moved = 1;
            }
    }
    return at;
}

/* Places the forward-only outputs (packed layers' float spikes, batch-norm outputs whose neuron
 * recomputes its charge) by replaying the forward: each is live from its own forward to its last
 * consumer's, c, so it may lie over the transient outputs of the layers above
 * c, which are written only later (region_start as plan_gradients'), and beyond the region.
 * fwd_at[i]: its offset in the arena; returns the highest end (at least the region's end). */
static size_t plan_forward_only(const bf_model *m, const size_t *region_start, const int *last_consumer,
                                placed_block *live, size_t *fwd_at) {
    int n_live = 0;
    size_t top = region_start[m->num_layers];
    for (int i = 0; i < m->num_layers; i++) {
        for (int k = 0; k < n_live;) /* dead once its last consumer's forward has run */
            if (live[k].owner < i) live[k] = live[--n_live];
            else k++;
        if (!output_is_forward_only(&m->layers[i])) continue;
        size_t size = align_up(bf_shape_count(m->layers[i].out_shape) * sizeof(float));
        size_t at = first_fit(live, n_live, region_start[last_consumer[i] + 1], size);
        fwd_at[i] = at;
        live[n_live++] = (placed_block){at, at + size, last_consumer[i], 0};
        if (at + size > top) top = at + size;
    }
    return top;
}

/* For each packed layer, the consumers whose backward reads its spikes: unpack_before = the first
 * of them in backward order (the highest), *lowest = the last (-1 both: none reads them). */
static void plan_unpack_readers(bf_model *m, int *lowest) {
    for (int i = 0; i < m->num_layers; i++) {
        m->layers[i].unpack_before = lowest[i] = -1;
        if (!m->layers[i].spikes_packed) continue;
        for (int t = i + 1; t < m->num_layers; t++)
            for (int j = 0; j < m->layers[t].num_inputs; j++)
                if (m->layers[t].input[j] == i && backward_reads_input(&m->layers[t])) {
                    if (lowest[i] < 0) lowest[i] = t;
                    m->layers[i].unpack_before = t;
                }
    }
}

/* A block of the backward's memory to place: an output gradient, restored spikes or a max-joint
 * flex scratch of `layer`, `size` bytes at an offset >= lower, live from the backward of `birth`
 * (the first to write or read it) down to that of `death` (the last); `at`: where it went. */
typedef enum { BLOCK_GRADIENT, BLOCK_SPIKES, BLOCK_SCRATCH } block_kind;
typedef struct backward_block {
    size_t size, lower, at;
    int birth, death, layer;
    block_kind kind;
} backward_block;

/* Places the blocks in `order`, each at the lowest offset >= its lower bound that overlaps no block
 * placed before it whose life overlaps its own; returns the highest end (at least `top`).
 * scratch: room for n placed_block. */
static size_t place_blocks(backward_block *blocks, const int *order, int n, size_t top, placed_block *scratch) {
    for (int k = 0; k < n; k++) {
        backward_block *bk = &blocks[order[k]];
        int n_conflicts = 0;
        for (int j = 0; j < k; j++) {
            const backward_block *o = &blocks[order[j]];
            if (o->death <= bk->birth && bk->death <= o->birth)
                scratch[n_conflicts++] = (placed_block){o->at, o->at + o->size, o->layer, 0};
        }
        bk->at = first_fit(scratch, n_conflicts, bk->lower, bk->size);
        if (bk->at + bk->size > top) top = bk->at + bk->size;
    }
    return top;
}

/* Whether block a goes before block b in the largest-first order: larger, then born earlier, then
 * first in backward order. */
static int placed_before(const backward_block *blocks, int a, int b) {
    if (blocks[a].size != blocks[b].size) return blocks[a].size > blocks[b].size;
    if (blocks[a].birth != blocks[b].birth) return blocks[a].birth > blocks[b].birth;
    return a < b;
}

/* order[0..n) sorted largest first (insertion sort: a few hundred blocks at most). */
static void order_by_size(const backward_block *blocks, int *order, int n) {
    for (int k = 1; k < n; k++) {
        const int v = order[k];
        int j = k;
        for (; j > 0 && placed_before(blocks, v, order[j - 1]); j--) order[j] = order[j - 1];
        order[j] = v;
    }
}

/* Places every output gradient, max-joint flex scratch and restored spikes over the activations
 * already dead when the backward needs them; region_start[t]: the offset of layer t's transient
 * output (region_start[L]: the region's end); forward_top: the end of the forward-only outputs,
 * dead in the backward. A block born in the backward of t may lie anywhere above the outputs of
 * layers <= t, over every block whose life does not overlap its own. Two orders are tried and the
 * one that ends lower kept: the backward order (each block at its birth, lowest first), and the
 * largest block first, which keeps a small early gradient from splitting the room two large later
 * ones need (PlasticFlex VGG-11 at T = 8: 1.83 GiB instead of 2.09). */
static bf_status plan_gradients(bf_model *m, const size_t *region_start, size_t forward_top, const int *last_consumer,
                                const int *lowest_reader, placed_block *scratch) {
    const int L = m->num_layers;
    backward_block *blocks = malloc(3 * (size_t)L * sizeof *blocks);
    int *order = calloc(3 * (size_t)L, sizeof *order); /* calloc: GCC cannot see that place_blocks reads only [0, n) */
    size_t *first_at = malloc(3 * (size_t)L * sizeof *first_at);
    if (!blocks || !order || !first_at) {
        free(blocks);
        free(order);
        free(first_at);
        return bf_error(BF_ERR_OOM, "model: out of host memory");
    }
    int n = 0;
    for (int t = L - 1; t >= 0; t--) { /* in backward order: what each backward needs first */
        const bf_layer *l = &m->layers[t];
        for (int j = 0; j < l->num_inputs; j++) { /* spikes this backward restores, live down to their last reader */
            int in = l->input[j];
            if (in < 0 || m->layers[in].unpack_before != t) continue;
            int seen = 0;
            for (int k = 0; k < n; k++) seen |= blocks[k].kind == BLOCK_SPIKES && blocks[k].layer == in;
            if (!seen)
                blocks[n++] = (backward_block){align_up(bf_shape_count(m->layers[in].out_shape) * sizeof(float)),
                                               region_start[t + 1], SIZE_MAX, t, lowest_reader[in], in, BLOCK_SPIKES};
        }
        for (int j = 0; j < l->num_inputs; j++) { /* the gradients this backward writes first */
            int in = l->input[j];
            if (in < 0 || last_consumer[in] != t || !m->layers[in].needs_grad) continue;
            if (l->relu_joined || l->neuron_in_bn) { /* the batch-norm or add reads l's gradient: it lives on until then */
                for (int k = 0; k < n; k++)
                    if (blocks[k].kind == BLOCK_GRADIENT && blocks[k].layer == t) blocks[k].death = in;
                continue;
            }
            if (l->bn_in_flex) { /* the flex layer reads the batch-norm's gradient: it lives on until then */
                const int owner = bn_gradient_owner(m, t);
                for (int k = 0; k < n; k++)
                    if (blocks[k].kind == BLOCK_GRADIENT && blocks[k].layer == owner) blocks[k].death = in;
                continue;
            }
            int seen = 0;
            for (int k = 0; k < n; k++) seen |= blocks[k].kind == BLOCK_GRADIENT && blocks[k].layer == in;
            if (!seen)
                blocks[n++] = (backward_block){align_up(bf_shape_count(m->layers[in].out_shape) * sizeof(float)),
                                               region_start[t + 1], SIZE_MAX, t, in, in, BLOCK_GRADIENT};
        }
        size_t scratch_bytes = align_up(bf_flex_backward_scratch_floats(m, t) * sizeof(float));
        if (scratch_bytes) /* live during this backward alone */
            blocks[n++] = (backward_block){scratch_bytes, region_start[t + 1], SIZE_MAX, t, t, t, BLOCK_SCRATCH};
    }
    for (int k = 0; k < n; k++) order[k] = k;
    size_t top = place_blocks(blocks, order, n, forward_top, scratch);
    for (int k = 0; k < n; k++) first_at[k] = blocks[k].at;
    order_by_size(blocks, order, n);
    const size_t top_by_size = place_blocks(blocks, order, n, forward_top, scratch);
    if (top_by_size < top) top = top_by_size;
    else
        for (int k = 0; k < n; k++) blocks[k].at = first_at[k];
    for (int k = 0; k < n; k++) {
        bf_layer *l = &m->layers[blocks[k].layer];
        if (blocks[k].kind == BLOCK_GRADIENT) l->dout_at = blocks[k].at;
        else if (blocks[k].kind == BLOCK_SPIKES) l->unpack_at = blocks[k].at;
        else l->bwd_scratch_at = blocks[k].at;
    }
    for (int t = 0; t < L; t++) /* a fused batch-norm's or add's gradient is its ReLU's or neuron's */
        if (m->layers[t].relu_joined || m->layers[t].neuron_in_bn) m->layers[m->layers[t].input[0]].dout_at = m->layers[t].dout_at;
    for (int t = 0; t < L; t++) /* and a flex layer applying its batch-norm's dx has that batch-norm's */
        if (m->layers[t].flex_applies_bn) m->layers[t].dout_at = m->layers[t + 1].dout_at;
    size_t live_peak = 0; /* gradients and scratch live at once, wherever placed */
    for (int t = L - 1; t >= 0; t--) {
        size_t live = 0;
        for (int k = 0; k < n; k++)
            if (blocks[k].kind != BLOCK_SPIKES && blocks[k].death <= t && t <= blocks[k].birth) live += blocks[k].size;
        if (live > live_peak) live_peak = live;
    }
    free(blocks);
    free(order);
    free(first_at);
    for (int i = 0; i < L - 1; i++)
        if (m->layers[i].dout_at == SIZE_MAX && m->layers[i].num_consumers > 0 && m->layers[i].needs_grad)
            return bf_error(BF_ERR_INTERNAL, "model: layer %s got no gradient memory", m->layers[i].name);
    m->transient_bytes = region_start[L];
    m->grad_bytes = top - region_start[L];
    m->grad_live_bytes = live_peak;
    /* The accumulation scratch holds a second consumer's gradient before it is added to the first
     * one's (layers.c), and the unused dx of a batch-norm on the raw input or on a layer that needs no
     * gradient (a spiking net's encode layer): a chain needs none. */
    m->grad_scratch_floats = 0;
    for (int i = 0; i < L; i++) {
        const bf_layer *li = &m->layers[i];
        size_t need = li->num_consumers > 1 ? bf_shape_count(li->out_shape) : 0;
        if (li->kind == BF_LAYER_BATCHNORM && (li->input[0] == BF_MODEL_INPUT || !m->layers[li->input[0]].needs_grad))
            need = bf_shape_count(li->out_shape); /* its dx, which nothing reads: the same size as its input */
        if (need > m->grad_scratch_floats) m->grad_scratch_floats = need;
    }
    int input_consumers = 0; /* the image's gradient, when several layers read it */
    for (int i = 0; i < L; i++)
        for (int j = 0; j < m->layers[i].num_inputs; j++) input_consumers += m->layers[i].input[j] == BF_MODEL_INPUT;
    if (m->input_gradient && input_consumers > 1 && bf_shape_count(m->input_shape) > m->grad_scratch_floats)
        m->grad_scratch_floats = bf_shape_count(m->input_shape);
    return BF_OK;
}

static int by_start(const void *a, const void *b) {
    const placed_block *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* The largest run of [from, to) that none of the n blocks overlaps (sorts them): its size, and
 * its start in *at. */
static size_t largest_gap(placed_block *blocks, int n, size_t from, size_t to, size_t *at) {
    qsort(blocks, (size_t)n, sizeof *blocks, by_start);
    size_t best = 0, cur = from;
    *at = from;
    for (int k = 0; k <= n && cur < to; k++) {
        const size_t end = k < n && blocks[k].lo < to ? blocks[k].lo : to;
        if (end > cur && end - cur > best) {
            best = end - cur;
            *at = cur;
        }
        if (k < n && blocks[k].hi > cur) cur = blocks[k].hi;
    }
    return best;
}

/* The forward-only outputs live during the forward of layer t (written at or before it, read at or
 * after it), as plan_forward_only placed them, into live; returns how many. */
static int forward_live(const bf_model *m, int t, const size_t *fwd_at, const int *last_consumer, placed_block *live) {
    int n = 0;
    for (int i = 0; i <= t; i++)
        if (output_is_forward_only(&m->layers[i]) && last_consumer[i] >= t)
            live[n++] = (placed_block){fwd_at[i], fwd_at[i] + align_up(bf_shape_count(m->layers[i].out_shape) * sizeof(float)), i, 0};
    return n;
}

/* Places each mask-joint flex layer's forward scratch, live during its forward alone, where the
 * workspace of that forward could go: at or above the outputs of the layers above it (not yet
 * written), over any gradient (none is live in a forward), clear of the forward-only outputs still
 * to be read; beyond top where nothing fits. Returns the highest end (at least top). */
static size_t plan_forward_scratch(bf_model *m, const size_t *region_start, const size_t *fwd_at, const int *last_consumer,
                                   size_t top, placed_block *live) {
    for (int t = 0; t < m->num_layers; t++) {
        const size_t size = align_up(bf_flex_forward_scratch_floats(m, t) * sizeof(float));
        if (!size) continue;
        const int n = forward_live(m, t, fwd_at, last_consumer, live);
        const size_t at = first_fit(live, n, region_start[t + 1], size);
        m->layers[t].fwd_scratch_at = at;
        if (at + size > top) top = at + size;
    }
    return top;
}

/* Workspace hints: for each layer's forward and backward, the largest block of [0, top) that no
 * buffer live during that pass holds, by replaying both passes as the plan placed them. Forward
 * of t: the outputs of the layers above t are not written yet, gradients not at all; only
 * forward-only outputs still to be read are live there. Backward of t: the outputs of the layers above t
 * are dead, except where gradients, restored spikes and t's backward scratch now lie. */
static void plan_workspace_hints(bf_model *m, const size_t *region_start, const size_t *fwd_at, size_t top,
                                 const int *last_consumer, const int *lowest_reader, placed_block *live) {
    const int L = m->num_layers;
    for (int t = 0; t < L; t++) {
        int n = forward_live(m, t, fwd_at, last_consumer, live);
        bf_layer *l = &m->layers[t];
        if (l->fwd_scratch_at != SIZE_MAX)
            live[n++] = (placed_block){l->fwd_scratch_at,
                                       l->fwd_scratch_at + align_up(bf_flex_forward_scratch_floats(m, t) * sizeof(float)), t, 0};
        l->ws_free_bytes[0] = largest_gap(live, n, region_start[t + 1], top, &l->ws_free_at[0]);
        n = 0;
        for (int i = 0; i < L; i++) {
            const bf_layer *li = &m->layers[i];
            const size_t bytes = align_up(bf_shape_count(li->out_shape) * sizeof(float));
            /* a gradient lives down to its own backward, or a fused pair's down to the batch-norm's or add's (and
             * on to the flex layer's before it that applies that batch-norm's dx) */
            int until = li->relu_joined || li->neuron_in_bn ? li->input[0] : i;
            if (until >= 0 && m->layers[until].bn_in_flex) until = m->layers[until].input[0];
            if (li->dout_at != SIZE_MAX && until <= t && last_consumer[i] >= t)
                live[n++] = (placed_block){li->dout_at, li->dout_at + bytes, i, 1};
            if (i <= t && li->unpack_at != SIZE_MAX && lowest_reader[i] <= t && li->unpack_before >= t)
                live[n++] = (placed_block){li->unpack_at, li->unpack_at + bytes, i, 0};
        }
        if (l->bwd_scratch_at != SIZE_MAX)
            live[n++] = (placed_block){l->bwd_scratch_at,
                                       l->bwd_scratch_at + align_up(bf_flex_backward_scratch_floats(m, t) * sizeof(float)), t, 0};
        l->ws_free_bytes[1] = largest_gap(live, n, region_start[t + 1], top, &l->ws_free_at[1]);
    }
}

/* Whether layer l has trainable parameters (a frozen linear layer's live in buffers; under [optim]
 * train_only, those of the prefixes alone). */
static int has_trainable_params(const bf_model *m, const bf_layer *l) {
    for (int k = 0; k < l->num_params; k++) {
        const int p = l->param_index[k];
        if (p >= 0 && (!m->trained_only[0] || bf_name_in_prefixes(m->params[p].name, m->trained_only))) return 1;
    }
    return 0;
}

bf_status bf_memory_plan(bf_model *m, size_t *fwd_at) {
    const int L = m->num_layers;
    if (m->input_gradient || m->eval_backward) /* these pairs' backwards read training statistics: an evaluation's has none */
        m->fuse_bn_relu = m->fuse_flex_bn = m->fuse_flex_bn_stats = m->recompute_charge = m->fuse_bn_backward = 0;
    for (int i = 0; i < L; i++) { /* inputs come before their consumers */
        bf_layer *l = &m->layers[i];
        l->params_trained = has_trainable_params(m, l);
        l->needs_grad = m->input_gradient || l->params_trained; /* input_gradient: every path to the image */
        for (int j = 0; j < l->num_inputs; j++)
            if (l->input[j] >= 0 && m->layers[l->input[j]].needs_grad) l->needs_grad = 1;
    }
    for (int i = 0; i < L; i++) m->layers[i].in_place = relu_can_be_in_place(m, &m->layers[i]);
    for (int i = 0; i < L; i++) m->layers[i].bias_in_bn = conv_bias_can_fold(m, i);
    for (int i = 0; i < L; i++) m->layers[i].relu_fused = 0;
    for (int i = 0; i < L; i++) {
        m->layers[i].relu_joined = relu_can_join_input(m, i);
        if (m->layers[i].relu_joined) m->layers[m->layers[i].input[0]].relu_fused = 1;
    }
    for (int i = 0; i < L; i++) m->layers[i].spikes_packed = can_pack_spikes(m, i);
    for (int i = 0; i < L; i++) m->layers[i].out_forward_only = 0;
    for (int i = 0; i < L; i++) {
        bf_layer *l = &m->layers[i];
        l->charge_recomputed = charge_can_be_recomputed(m, l);
        if (l->charge_recomputed) m->layers[l->input[0]].out_forward_only = 1;
    }
    for (int i = 0; i < L; i++) m->layers[i].bn_runs_neuron = m->layers[i].bn_in_flex = m->layers[i].bn_stats_in_flex = 0;
    for (int i = 0; i < L; i++) m->layers[i].flex_dconv_apart = flex_route_slides(m, i);
    for (int i = 0; i < L; i++) {
        m->layers[i].flex_gives_bn_stats = flex_can_give_bn_stats(m, i);
        if (m->layers[i].flex_gives_bn_stats) m->layers[i + 1].bn_stats_in_flex = 1;
    }
    for (int i = 0; i < L; i++) {
        m->layers[i].neuron_in_bn = neuron_can_join_bn(m, i);
        if (m->layers[i].neuron_in_bn) m->layers[m->layers[i].input[0]].bn_runs_neuron = 1;
    }
    for (int i = 0; i < L; i++) { /* after the neurons': a batch-norm feeding one is left to them */
        m->layers[i].flex_applies_bn = flex_can_apply_bn(m, i);
        if (m->layers[i].flex_applies_bn) m->layers[i + 1].bn_in_flex = 1;
    }
    /* last: whether a producer's backward reads its output depends on the flex fusions above */
    for (int i = 0; i < L; i++) m->layers[i].charge_in_place = charge_can_overwrite_input(m, &m->layers[i]);
    for (int i = 0; i < L; i++) /* a shared input comes back through neuron_backward_bn only (ops.h) */
        if (m->layers[i].kind == BF_LAYER_NEURON && m->layers[i].neuron.shared_input && !m->layers[i].charge_recomputed)
            return bf_error(BF_ERR_INTERNAL, "model: neuron %s reads one step of input at every step, which needs its "
                            "charge recomputed from the batch-norm before it (a LIF/IF layer of at most %d steps, "
                            "[spiking] recompute_charge = true)", m->layers[i].name, BF_NEURON_BN_MAX_T);

    /* 1. the transient outputs, in layer order, from offset 0; the forward-only region after them;
     * the gradients over and after both */
    size_t *region_start = malloc(((size_t)L + 1) * sizeof(size_t));
    int *last_consumer = malloc((size_t)L * sizeof(int)), *lowest_reader = malloc((size_t)L * sizeof(int));
    placed_block *live = malloc((3 * (size_t)L + 1) * sizeof(placed_block));
    bf_status planned = BF_OK;
    if (!region_start || !last_consumer || !lowest_reader || !live) {
        planned = bf_error(BF_ERR_OOM, "model: out of host memory");
    } else {
        region_start[0] = 0;
        for (int i = 0; i < L; i++)
            region_start[i + 1] = region_start[i] + (bf_memory_plan_is_transient(m, i) ? output_bytes(&m->layers[i]) : 0);
        for (int i = 0; i < L; i++) {
            bf_layer *l = &m->layers[i];
            l->dout_at = l->bwd_scratch_at = l->fwd_scratch_at = l->unpack_at = fwd_at[i] = SIZE_MAX;
            last_consumer[i] = -1;
        }
        for (int t = 0; t < L; t++)
            for (int j = 0; j < m->layers[t].num_inputs; j++)
                if (m->layers[t].input[j] >= 0) last_consumer[m->layers[t].input[j]] = t;
        const size_t forward_top = plan_forward_only(m, region_start, last_consumer, live, fwd_at);
        m->forward_only_bytes = forward_top - region_start[L];
        plan_unpack_readers(m, lowest_reader);
        planned = plan_gradients(m, region_start, forward_top, last_consumer, lowest_reader, live);
        if (planned == BF_OK) {
            const size_t top = plan_forward_scratch(m, region_start, fwd_at, last_consumer,
                                                    m->transient_bytes + m->grad_bytes, live);
            m->grad_bytes = top - m->transient_bytes;
            plan_workspace_hints(m, region_start, fwd_at, top, last_consumer, lowest_reader, live);
        }
    }
    free(region_start);
    free(last_consumer);
    free(lowest_reader);
    free(live);
    BF_TRY(planned);
    /* 2. what every layer keeps, the accumulation scratch */
    size_t arena_bytes = m->transient_bytes + m->grad_bytes;
    for (int i = 0; i < L; i++) arena_bytes += kept_bytes(m, i);
    arena_bytes += align_up(m->grad_scratch_floats * sizeof(float));
    /* Synchronised batch-norm's per-channel sums (sync_bn.c): kept even when sync_bn is off, since
     * data parallelism is attached after finalize; a few KiB at most. */
    m->bn_sync_doubles = 0;
    for (int i = 0; i < L; i++) {
        const bf_layer *l = &m->layers[i];
        const int normalises = l->kind == BF_LAYER_BATCHNORM || (l->kind == BF_LAYER_FLEX && l->flex_opt.logits_bn);
        if (normalises && 2 * (size_t)l->bn.c + 1 > m->bn_sync_doubles) m->bn_sync_doubles = 2 * (size_t)l->bn.c + 1;
    }
    arena_bytes += align_up(m->bn_sync_doubles * sizeof(double));
    if (m->input_gradient) /* dinput */
        arena_bytes += align_up(bf_shape_count(m->input_shape) * sizeof(float));
    if (m->input_gradient || m->eval_backward) /* the zeros and the scratch of an evaluation-mode batch-norm backward (layers.c) */
        arena_bytes += align_up(m->bn_sync_doubles * sizeof(float)) + align_up(2 * m->bn_sync_doubles * sizeof(float));
    m->arena_bytes = arena_bytes;
    return BF_OK;
}

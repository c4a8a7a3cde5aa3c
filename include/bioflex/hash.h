/* hash.h - counter-based random numbers shared by the CPU and CUDA backends.
 *
 * Every random decision in bioflex (dropout masks, data augmentation, procedural data, shuffles)
 * is a pure function of (seed, counter). That is what makes a CPU run repeat exactly, makes a
 * resumed run bit-identical to an uninterrupted one (the "RNG state" is just the step counter),
 * and lets the CUDA and CPU dropout kernels draw identical masks. The mixer is SplitMix64's
 * finaliser, which passes BigCrush when fed a counter. */
#ifndef BIOFLEX_HASH_H
#define BIOFLEX_HASH_H

#include <stdint.h>

#if defined(__CUDACC__)
#define BF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define BF_HOST_DEVICE static inline
#endif

/* 64-bit mix of a 64-bit value. */
BF_HOST_DEVICE uint64_t bf_hash64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Hash of a (seed, counter) pair. */
BF_HOST_DEVICE uint64_t bf_hash2(uint64_t seed, uint64_t counter) {
    return bf_hash64(bf_hash64(seed) ^ counter);
}

/* Uniform float in [0, 1) with 24 random bits, identical on host and device. */
BF_HOST_DEVICE float bf_uniform(uint64_t seed, uint64_t counter) {
    return (float)(bf_hash2(seed, counter) >> 40) * (1.0f / 16777216.0f);
}

/* Where the random draws of a tensor's elements come from (dropout, stochastic flex masks, rate-coded
 * spikes). Element i of a tensor without a time axis draws bf_uniform(seed, first + i); one laid out
 * [T, ...] with step_elements per time step draws bf_uniform(seed, t * 2^48 + first + j) for element j
 * of step t. first is the counter of the batch's first sample (its position times the elements per
 * sample; bf_layer_draws), so a sample draws the same numbers whichever batch or data-parallel rank
 * holds it, as long as a step's counters stay below 2^48. */
typedef struct bf_draws {
    uint64_t seed;
    uint64_t first;
    uint64_t step_elements; /* 0: no time axis */
} bf_draws;

/* The draws of a tensor that starts its batch and has no time axis: ops called outside a model. */
BF_HOST_DEVICE bf_draws bf_draws_of(uint64_t seed) {
    bf_draws d = {seed, 0, 0};
    return d;
}

/* Element i's uniform draw in [0, 1). */
BF_HOST_DEVICE float bf_draw_uniform(bf_draws d, uint64_t i) {
    uint64_t t = 0;
    if (d.step_elements) {
        t = i / d.step_elements;
        i -= t * d.step_elements;
    }
    return bf_uniform(d.seed, (t << 48) + d.first + i);
}

#if !defined(__CUDACC__)
#include <math.h>
/* Standard normal draw i of a seed, on the host: Box-Muller in double from its uniform draws 2i and 2i + 1. */
static inline double bf_normal(uint64_t seed, uint64_t i) {
    const double u1 = 1.0 - bf_uniform(seed, 2 * i), u2 = bf_uniform(seed, 2 * i + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
#endif

/* Derives an independent stream seed, e.g. bf_seed_derive(run_seed, BF_STREAM_DROPOUT, step). */
BF_HOST_DEVICE uint64_t bf_seed_derive(uint64_t seed, uint64_t stream, uint64_t index) {
    return bf_hash64(bf_hash2(seed, stream) ^ bf_hash64(index + 0x632BE59BD9B4E019ull));
}

/* Stream identifiers, so that no two uses of the run seed draw the same numbers. */
enum {
    BF_STREAM_INIT = 1,      /* weight initialisation */
    BF_STREAM_SHUFFLE = 2,   /* per-epoch permutation of the training set */
    BF_STREAM_AUGMENT = 3,   /* per-sample augmentation */
    BF_STREAM_DROPOUT = 4,   /* dropout masks, per step and layer */
    BF_STREAM_DATA = 5,      /* procedural dataset content */
    BF_STREAM_NOISE = 6,     /* additive input noise */
    BF_STREAM_SUBSET = 7,    /* dataset subsets */
    BF_STREAM_TASK = 8,      /* multi-task datasets: the random task of each training sample */
    BF_STREAM_MULTI = 9,     /* Multi-MNIST generation: the partner digit and its placement */
    BF_STREAM_THRESHOLD = 10, /* flex thresholds re-drawn every forward pass (threshold = resample) */
    BF_STREAM_SURFACE = 11,   /* the loss surface's two directions (analysis.h) */
    BF_STREAM_ATTACK = 12,    /* adversarial attacks' random starts and noise (analysis.h) */
    BF_STREAM_HESSIAN = 13,   /* the Hessian's power-iteration starts and Hutchinson probes (analysis.h) */
    BF_STREAM_FRAGMENTS_S1 = 14,    /* Net Fragments: Bernoulli S1 units, per sample (fragments.h) */
    BF_STREAM_FRAGMENTS_S2 = 15,    /* ... Bernoulli S2 cells, per sample */
    BF_STREAM_FRAGMENTS_NOISE = 16  /* ... the evaluation's feature-noise masks, per setting and line */
};

#endif

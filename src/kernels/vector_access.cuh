/* vector_access.cuh - internal: V consecutive floats moved by one load or store (V = 4: 16 bytes,
 * one 128-bit access), shared by the kernels that vectorise their elementwise streams (neuron.cu,
 * flex_slide.cuh). The caller checks the alignment: the base pointer and every offset a multiple
 * of V floats. */
#ifndef BIOFLEX_VECTOR_ACCESS_CUH
#define BIOFLEX_VECTOR_ACCESS_CUH

namespace {

template <int V>
struct alignas(4 * V) fvec {
    float v[V];
};

template <int V>
__device__ __forceinline__ fvec<V> load_vec(const float *p) {
    return *reinterpret_cast<const fvec<V> *>(p);
}

template <int V>
__device__ __forceinline__ void store_vec(float *p, const fvec<V> &x) {
    *reinterpret_cast<fvec<V> *>(p) = x;
}

}  // namespace

#endif

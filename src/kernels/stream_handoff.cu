/* stream_handoff.cu - orders the CUDA backend's compute stream against another stream (the NCCL
 * stream of data parallelism) with an event, without a host wait: gradient buckets are all-reduced
 * on the NCCL stream while the backward pass continues on the compute stream. */
#include "bioflex/comm.h"
#include "cuda_backend.h"

extern "C" bf_status bf_cuda_stream_handoff(bf_backend *b, void *other_stream, int to_other) {
    bf_cuda_impl *im = NULL;
    BF_TRY(bf_cuda_enter(b, &im));
    cudaStream_t other = (cudaStream_t)other_stream;
    cudaStream_t from = to_other ? im->stream : other, to = to_other ? other : im->stream;
    cudaEvent_t ev;
    BF_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    cudaError_t e = cudaEventRecord(ev, from);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(to, ev, 0);
    cudaEventDestroy(ev); /* released once the recorded work completes */
    BF_CUDA_CHECK(e);
    return BF_OK;
}

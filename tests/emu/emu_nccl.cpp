/* emu_nccl.cpp - NCCL for the kernel emulator: the ranks of one process (bioflex-train --gpus N on
 * BF_EMU_DEVICES=N emulated devices, emu_runtime.cpp) meet in each collective, so the multi-GPU
 * path's host logic (one thread per GPU, communicators made in one group, weights broadcast from rank
 * 0, gradient buckets launched from the backward pass, sync batch-norm sums, sharded evaluation,
 * rank 0's checkpoints) runs in CI without GPUs.
 *
 * A collective is done when it is enqueued, as every emulated kernel is: the rank's host thread
 * waits in the call until every rank of its communicator has made the same call, and the last to
 * arrive computes the result into every rank's buffer. Sums run over the ranks in rank order in the
 * data's own type (ncclAvg then divides by the rank count), which is one of the orders NCCL's rings
 * may take. What it does not model: NCCL's concurrency with kernels on other streams, and the
 * driver's locks (the hang bf_cuda_set_driver_fence prevents needs a real GPU). Ranks of other
 * processes (mpirun) are not emulated: a unique id is only known inside its own process.
 *
 * Calls that do not match across the ranks (another kind, count, type, operation or root) fail on
 * every rank with ncclInvalidUsage, where NCCL would hang or mix buffers; a rank left waiting for
 * BF_EMU_NCCL_TIMEOUT_S seconds (default 300) fails with ncclSystemError, since no other thread can
 * release it (bioflex's own collective timeout waits on a stream, which here is always done). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "include/nccl.h"

namespace {

enum { MAX_RANKS = 8 };
enum kind { ALL_REDUCE = 1, BROADCAST = 2 };

struct call {
    int kind;
    const void *send;
    void *recv;
    size_t count;
    int type, op, root;
};

/* The ranks of one unique id. */
struct clique {
    char id[128];
    int nranks;
    int refs; /* communicators not yet destroyed */
    std::mutex m;
    std::condition_variable cv;
    unsigned long gen = 0; /* collectives completed */
    int arrived = 0;
    call calls[MAX_RANKS];
    ncclResult_t result = ncclSuccess; /* of the last completed collective */
    bool aborted = false;
};

std::mutex g_cliques_lock;
std::vector<clique *> g_cliques;
unsigned long g_next_id;

size_t type_bytes(int type) { return type == ncclDouble ? 8 : type == ncclFloat ? 4 : 1; }

template <typename T>
void reduce_into(clique &c, size_t count, int op) {
    std::vector<T> acc(count);
    for (size_t i = 0; i < count; i++) {
        T sum = ((const T *)c.calls[0].send)[i];
        for (int r = 1; r < c.nranks; r++) sum += ((const T *)c.calls[r].send)[i];
        acc[i] = op == ncclAvg ? sum / (T)c.nranks : sum;
    }
    for (int r = 0; r < c.nranks; r++) memcpy(c.calls[r].recv, acc.data(), count * sizeof(T));
}

/* Run by the last rank to arrive, under the clique's lock. */
ncclResult_t complete(clique &c) {
    const call &first = c.calls[0];
    for (int r = 1; r < c.nranks; r++) {
        const call &k = c.calls[r];
        if (k.kind != first.kind || k.count != first.count || k.type != first.type || k.op != first.op ||
            k.root != first.root) {
            fprintf(stderr, "emulated NCCL: rank %d's collective (kind %d, %zu elements, type %d, op %d, root %d) "
                    "does not match rank 0's (kind %d, %zu, %d, %d, %d)\n", r, k.kind, k.count, k.type, k.op, k.root,
                    first.kind, first.count, first.type, first.op, first.root);
            return ncclInvalidUsage;
        }
    }
    if (first.kind == BROADCAST) {
        const size_t bytes = first.count * type_bytes(first.type);
        std::vector<char> data((const char *)c.calls[first.root].send, (const char *)c.calls[first.root].send + bytes);
        for (int r = 0; r < c.nranks; r++) memcpy(c.calls[r].recv, data.data(), bytes);
    } else if (first.type == ncclFloat) {
        reduce_into<float>(c, first.count, first.op);
    } else if (first.type == ncclDouble) {
        reduce_into<double>(c, first.count, first.op);
    } else {
        return ncclInvalidArgument;
    }
    return ncclSuccess;
}

double timeout_s(void) {
    const char *env = getenv("BF_EMU_NCCL_TIMEOUT_S");
    const double t = env ? atof(env) : 0;
    return t > 0 ? t : 300;
}

} // namespace

struct bf_emu_nccl_comm {
    clique *c;
    int rank;
    ncclResult_t async;
};

namespace {

ncclResult_t collective(ncclComm_t comm, const call &k) {
    if (!comm) return ncclInvalidArgument;
    clique &c = *comm->c;
    std::unique_lock<std::mutex> lock(c.m);
    if (c.aborted) return comm->async = ncclRemoteError;
    const unsigned long gen = c.gen;
    c.calls[comm->rank] = k;
    if (++c.arrived == c.nranks) {
        c.result = complete(c);
        c.arrived = 0;
        c.gen++;
        c.cv.notify_all();
        return c.result;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s());
    if (!c.cv.wait_until(lock, deadline, [&] { return c.gen != gen || c.aborted; })) {
        fprintf(stderr, "emulated NCCL: rank %d waited %.0f s for the other ranks of its collective\n", comm->rank,
                timeout_s());
        c.aborted = true; /* the others may not wait for this rank any more either */
        c.cv.notify_all();
        return comm->async = ncclSystemError;
    }
    if (c.gen == gen) return comm->async = ncclRemoteError; /* aborted by another rank */
    return c.result;
}

void release(ncclComm_t comm) {
    clique *c = comm->c;
    delete comm;
    std::lock_guard<std::mutex> hold(g_cliques_lock);
    if (--c->refs > 0) return;
    for (size_t i = 0; i < g_cliques.size(); i++)
        if (g_cliques[i] == c) g_cliques.erase(g_cliques.begin() + (long)i);
    delete c;
}

} // namespace

extern "C" {

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclSystemError: return "unhandled system error (emulated NCCL: a rank waited too long)";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage (emulated NCCL: the ranks' collectives do not match)";
    case ncclRemoteError: return "remote process exited or there was a network error (emulated NCCL: aborted)";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "internal error";
    }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    std::lock_guard<std::mutex> hold(g_cliques_lock);
    snprintf(id->internal, sizeof id->internal, "bioflex emulated NCCL id %ld/%lu", (long)getpid(), ++g_next_id);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    *comm = NULL;
    if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    std::lock_guard<std::mutex> hold(g_cliques_lock);
    clique *c = NULL;
    for (clique *k : g_cliques)
        if (memcmp(k->id, id.internal, sizeof k->id) == 0) c = k;
    if (!c) {
        c = new clique();
        memcpy(c->id, id.internal, sizeof c->id);
        c->nranks = nranks;
        g_cliques.push_back(c);
    } else if (c->nranks != nranks) {
        return ncclInvalidArgument;
    }
    c->refs++;
    *comm = new bf_emu_nccl_comm{c, rank, ncclSuccess};
    return ncclSuccess;
}

/* Communicators are ready when made (nothing waits for the other ranks), so a group changes nothing. */
ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    return collective(comm, call{ALL_REDUCE, sendbuff, recvbuff, count, (int)datatype, (int)op, 0});
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    return collective(comm, call{BROADCAST, sendbuff, recvbuff, count, (int)datatype, 0, root});
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async_error) {
    if (!comm) return ncclInvalidArgument;
    std::lock_guard<std::mutex> hold(comm->c->m);
    *async_error = comm->c->aborted && comm->async == ncclSuccess ? ncclRemoteError : comm->async;
    return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    {
        std::lock_guard<std::mutex> hold(comm->c->m);
        comm->c->aborted = true;
        comm->c->cv.notify_all();
    }
    release(comm);
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm) release(comm);
    return ncclSuccess;
}

} /* extern "C" */

// The NCCL backend of Comm: collectives on GPU buffers run on NCCL, those on host buffers
// (status agreement, metrics, strings, row counts) go to the host Comm it wraps (the MPI
// world, or a LocalComm for a world of one). A call goes to NCCL when its buffers are GPU
// memory (cudaPointerGetAttributes); every rank of one collective must pass the same kind.
//
// Bootstrap: rank 0 creates the NCCL unique id and broadcasts it over the host Comm; every
// rank then joins the NCCL communicator on GPU 0 of its process (dist/local_device.h has
// narrowed CUDA_VISIBLE_DEVICES to the rank's own GPU). Split() splits both, so each
// process group has its own NCCL communicator (ncclCommSplit) and its own stream.
//
// Ordering: a collective is enqueued on the communicator's stream after an event recorded
// on the compute stream of the CUDA backend (so it sees every buffer written before the
// call), and records a "done" event. Test() asks that event; Wait() makes the compute
// stream wait for it without blocking the host, so later work on the backend (kernels,
// CopyToHost) sees the result, which is the meaning of "done" for GPU buffers. A watchdog
// thread per communicator watches the done events (and TakeDeviceWaitSeconds() reports how
// long the compute stream stood still in the Wait()s of StartAllReduce/StartReduceScatter,
// timed with CUDA events): a collective not finished within
// `timeout_seconds` (a dead or stuck peer) or an asynchronous NCCL error makes it print
// which collective of which group stalled, abort the NCCL communicator and exit the
// process with status 1, so the launcher stops the job (resume from the last checkpoint).
//
// NCCL mapping (ring algorithms, so CommStats' ring model is NCCL's bus traffic):
//   AllReduce      ncclAllReduce, in place
//   ReduceScatter  ncclReduceScatter when the blocks are even; uneven blocks: one
//                  ncclReduce per rank (root q gets block q), in one NCCL group
//   AllGather      ncclAllGather when even; uneven: one ncclBroadcast per root, grouped
//   AllToAll       ncclSend/ncclRecv to and from every rank with a non-empty block, grouped
//   Broadcast      ncclBroadcast;  Barrier: the host Comm's
// Reductions take f32, f64, bf16, f16 and i32 (NCCL reduces bf16/f16 natively).
#ifndef DIST_NCCL_COMM_H_
#define DIST_NCCL_COMM_H_

#include <memory>

#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "kernels/backend.h"

namespace pmol::dist {

struct NcclOptions {
  // A collective still running after this many seconds aborts the process (> 0).
  double timeout_seconds = 600;
  // Use ncclReduceScatter / ncclAllGather when every block has the same size. False always
  // takes the per-root grouped form (for tests: with one GPU, blocks are always even).
  bool even_blocks_fast_path = true;
};

// Whether this build has the NCCL backend (built with --config=cuda).
bool NcclAvailable();

// Wraps `host` (all ranks of it call this together) into a Comm with an NCCL communicator
// over the same ranks, for GPU buffers of `backend` (a CUDA backend). Errors: a build
// without CUDA, a backend that is not CUDA, or NCCL failing to start (its message); the
// ranks should agree on `backend` being usable (AgreeOnStatus) before calling.
absl::StatusOr<std::unique_ptr<Comm>> CreateNcclComm(std::unique_ptr<Comm> host, Backend* backend,
                                                     const NcclOptions& options);

// The stream (a cudaStream_t) on which an NCCL Comm runs its collectives, for code that
// orders its own work around them (tests delay it); null for any other Comm or build.
void* NcclCommStream(Comm* comm);

}  // namespace pmol::dist

#endif  // DIST_NCCL_COMM_H_

// Comm: the collectives a distributed run uses, written once and implemented per
// transport (dist/mpi_comm.h on CPU buffers; dist/nccl_comm.h on GPU buffers, host ones
// going to MPI; dist/local_comm.h for a world of one process, which needs no MPI).
// Every rank of a Comm must call the same collectives in the same order with matching
// sizes. The plain calls block until this rank's part is done; buffers are host memory
// for MPI. Counts are element counts of `dtype`. StartAllReduce and StartReduceScatter
// return at once with the collective in flight (a PendingCollective): its buffers must
// stay untouched until Wait() returns or Test() has said true, and several may be in
// flight at once (they complete in any order but are matched across ranks in the order
// they were started). How far one progresses while the caller computes depends on the
// transport: NCCL runs it on its own stream; MPI moves data inside MPI calls, so callers
// Test() in-flight collectives now and then to drive it. On GPU buffers "done" is in
// stream order: after Wait() (or a blocking call) every later operation of the CUDA
// backend sees the result, without the host blocking.
//
//   AllReduce      data[i] <- op over ranks of data[i]                      (in place)
//   ReduceScatter  recv = rank r's block of op over ranks of send; send holds
//                  sum(counts) elements, block r is counts[r] long (uneven, 0 allowed)
//   AllGather      recv = concatenation over r of rank r's send (counts[r] elements)
//   AllToAll       rank r sends send_counts[q] elements to rank q (blocks in q order)
//                  and receives recv_counts[q] from q into recv (blocks in q order)
//   Broadcast      data <- root's data
//   Barrier        returns once every rank has entered
//
// Traffic accounting (CommStats): each call adds the bytes that a bandwidth-optimal
// (ring) implementation sends from this rank, the convention of NCCL's "bus bandwidth",
// so that the figures can be checked against the analytic volume of a training step.
// With N ranks and a buffer of B bytes (AllReduce: B = the buffer; ReduceScatter: the
// whole send buffer; AllGather: the whole receive buffer):
//   AllReduce 2(N-1)/N * B,  ReduceScatter and AllGather (N-1)/N * B (uneven blocks: the
//   total minus this rank's own block), AllToAll: the bytes sent to other ranks,
//   Broadcast: B on every rank but the last of the ring (N > 1), Barrier: 0.
#ifndef DIST_COMM_H_
#define DIST_COMM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/dtype.h"

namespace pmol::dist {

enum class ReduceOp { kSum, kMax, kMin };

// A collective in flight on this rank.
class PendingCollective {
 public:
  // Destroying one that is still in flight waits for it.
  virtual ~PendingCollective() = default;
  // Whether this rank's part is done (then the buffers are free); never blocks.
  virtual bool Test() = 0;
  // Blocks until this rank's part is done (aborting the job, like every collective, when
  // a peer does not answer within the communicator's timeout).
  virtual void Wait() = 0;
};

// Bytes and calls per kind of collective, on this rank.
struct CommStats {
  int64_t all_reduce_bytes = 0, reduce_scatter_bytes = 0, all_gather_bytes = 0,
          all_to_all_bytes = 0, broadcast_bytes = 0;
  int64_t calls = 0;
  int64_t total_bytes() const {
    return all_reduce_bytes + reduce_scatter_bytes + all_gather_bytes + all_to_all_bytes + broadcast_bytes;
  }
};

class Comm {
 public:
  virtual ~Comm() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // A short name for messages ("world", "data-parallel", ...).
  virtual const std::string& name() const = 0;

  virtual std::unique_ptr<PendingCollective> StartAllReduce(void* data, int64_t count, DType dtype,
                                                            ReduceOp op) = 0;
  virtual std::unique_ptr<PendingCollective> StartReduceScatter(const void* send, void* recv,
                                                                const std::vector<int64_t>& counts,
                                                                DType dtype, ReduceOp op) = 0;
  void AllReduce(void* data, int64_t count, DType dtype, ReduceOp op) {
    StartAllReduce(data, count, dtype, op)->Wait();
  }
  void ReduceScatter(const void* send, void* recv, const std::vector<int64_t>& counts, DType dtype,
                     ReduceOp op) {
    StartReduceScatter(send, recv, counts, dtype, op)->Wait();
  }
  virtual void AllGather(const void* send, void* recv, const std::vector<int64_t>& counts,
                         DType dtype) = 0;
  virtual void AllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                        const std::vector<int64_t>& recv_counts, DType dtype) = 0;
  virtual void Broadcast(void* data, int64_t count, DType dtype, int root) = 0;
  virtual void Barrier() = 0;

  // A new communicator over the ranks that pass the same `color`, ordered by `key` (then
  // by rank); every rank of this Comm must call it. `name` names the new group.
  virtual std::unique_ptr<Comm> Split(int color, int key, const std::string& name) = 0;

  const CommStats& stats() const { return stats_; }
  void ResetStats() { stats_ = CommStats(); }

  // Seconds the device's compute stream stood still in Wait() of collectives started by
  // StartAllReduce / StartReduceScatter (and so of the blocking AllReduce / ReduceScatter)
  // since the last call, and restarts the count. Only
  // NCCL has such waits (Wait() makes the compute stream wait without blocking the host);
  // it times each with CUDA events around the stream wait and synchronizes with them here.
  // Host transports block the host instead, which the caller times itself: 0.
  virtual double TakeDeviceWaitSeconds() { return 0; }

  // Typed conveniences on host vectors.
  void AllReduceSum(std::vector<double>& values) {
    AllReduce(values.data(), static_cast<int64_t>(values.size()), DType::kF64, ReduceOp::kSum);
  }
  double AllReduceSum(double value) {
    AllReduce(&value, 1, DType::kF64, ReduceOp::kSum);
    return value;
  }
  double AllReduceMax(double value) {
    AllReduce(&value, 1, DType::kF64, ReduceOp::kMax);
    return value;
  }
  // Every rank gets root's string.
  std::string BroadcastString(const std::string& value, int root);

 protected:
  // Called by implementations once per collective with the payload sizes in bytes (see
  // the file comment for the model).
  void CountAllReduce(int64_t bytes);
  void CountReduceScatter(int64_t total_bytes, int64_t own_bytes);
  void CountAllGather(int64_t total_bytes, int64_t own_bytes);
  void CountAllToAll(int64_t bytes_to_others);
  void CountBroadcast(int64_t bytes, int root);

  CommStats stats_;
};

// An error on any rank of `comm`, on every rank (a collective): OK when every rank is
// OK, else the error of the lowest failing rank, its message prefixed with "rank R: "
// when `comm` has several ranks. Lets ranks leave a phase together instead of one rank
// returning while the others wait for it in the next collective.
absl::Status AgreeOnStatus(Comm& comm, const absl::Status& status);

// Element counts of the blocks when `total` elements are split over `parts` ranks as
// evenly as possible (the first total % parts blocks one longer); uneven totals are
// fine, blocks may be 0.
std::vector<int64_t> EvenBlocks(int64_t total, int parts);

}  // namespace pmol::dist

#endif  // DIST_COMM_H_

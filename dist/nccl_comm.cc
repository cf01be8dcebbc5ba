// NCCL backend of Comm; see nccl_comm.h. Compiled only with --config=cuda
// (nccl_comm_unavailable.cc otherwise).
#include "dist/nccl_comm.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"

namespace pmol::dist {
namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "pmol: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

void CudaOk(cudaError_t err, const char* what) {
  if (err != cudaSuccess) Die(absl::StrCat("NCCL comm: ", what, ": ", cudaGetErrorString(err)));
}

void NcclOk(ncclResult_t result, const char* what, const std::string& group) {
  if (result != ncclSuccess) {
    Die(absl::StrCat("NCCL ", what, " on the ", group, " group failed: ", ncclGetErrorString(result), " (",
                     ncclGetLastError(nullptr), ")"));
  }
}

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return ncclFloat32;
    case DType::kF64: return ncclFloat64;
    case DType::kBF16: return ncclBfloat16;
    case DType::kF16: return ncclFloat16;
    case DType::kI32: return ncclInt32;
  }
  return ncclFloat32;
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

// Whether p is GPU memory (device or managed); null and host pointers are not.
bool OnDevice(const void* p) {
  if (p == nullptr) return false;
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

// Whether a collective with these buffers goes to NCCL; the non-null ones must agree.
bool DeviceCall(const void* a, const void* b) {
  const bool da = OnDevice(a), db = OnDevice(b);
  if (a != nullptr && b != nullptr && da != db) {
    Die("NCCL comm: a collective got one GPU buffer and one host buffer; both must be on the same side");
  }
  return da || db;
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

bool AllEqual(const std::vector<int64_t>& v) {
  for (int64_t x : v) {
    if (x != v.front()) return false;
  }
  return true;
}

std::vector<int64_t> Offsets(const std::vector<int64_t>& counts) {
  std::vector<int64_t> offsets(counts.size(), 0);
  for (size_t i = 1; i < counts.size(); ++i) offsets[i] = offsets[i - 1] + counts[i - 1];
  return offsets;
}

const char* At(const void* base, int64_t elements, DType dtype) {
  return static_cast<const char*>(base) + elements * static_cast<int64_t>(DTypeSize(dtype));
}
char* At(void* base, int64_t elements, DType dtype) {
  return static_cast<char*>(base) + elements * static_cast<int64_t>(DTypeSize(dtype));
}

// A "done" event shared by a pending collective and the watchdog.
struct DoneEvent {
  DoneEvent() { CudaOk(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreate"); }
  ~DoneEvent() { cudaEventDestroy(event); }
  bool Finished() const {
    const cudaError_t state = cudaEventQuery(event);
    if (state == cudaErrorNotReady) return false;
    CudaOk(state, "cudaEventQuery");
    return true;
  }
  cudaEvent_t event = nullptr;
};

// Watches the collectives of one communicator from its own thread (see nccl_comm.h).
class Watchdog {
 public:
  Watchdog(ncclComm_t comm, std::string group, int world_rank, int size, double timeout_seconds)
      : comm_(comm), group_(std::move(group)), world_rank_(world_rank), size_(size),
        timeout_seconds_(timeout_seconds), thread_([this] { Loop(); }) {}

  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

  void Watch(std::shared_ptr<DoneEvent> done, const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    watched_.push_back({std::move(done), what, Clock::now()});
  }

 private:
  struct Entry {
    std::shared_ptr<DoneEvent> done;
    const char* what;
    Clock::time_point start;
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        Fail(absl::StrCat("NCCL reported an error on the ", group_, " group: ", ncclGetErrorString(async)));
      }
      for (auto it = watched_.begin(); it != watched_.end();) {
        if (it->done->Finished()) {
          it = watched_.erase(it);
          continue;
        }
        if (std::chrono::duration<double>(Clock::now() - it->start).count() > timeout_seconds_) {
          Fail(absl::StrCat(it->what, " on the ", group_, " group (", size_, " ranks, NCCL) did not complete within ",
                            timeout_seconds_, " s: another rank has stopped or died (see the launcher's messages)"));
        }
        ++it;
      }
    }
  }

  [[noreturn]] void Fail(const std::string& why) {
    std::fprintf(stderr, "pmol: rank %d: %s; aborting the job, resume it from the last checkpoint\n", world_rank_,
                 why.c_str());
    std::fflush(stderr);
    ncclCommAbort(comm_);
    std::_Exit(1);
  }

  ncclComm_t comm_;
  std::string group_;
  int world_rank_, size_;
  double timeout_seconds_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::list<Entry> watched_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once everything above is set
};

// The compute stream's stalls in Wait(): a pair of timing events recorded on it just
// before and just after its wait for a collective's done event; the time between them is
// how long the stream stood still (about 0 when the collective had finished). Event pairs
// are reused once read.
class WaitTimer {
 public:
  ~WaitTimer() {
    for (auto* list : {&pending_, &free_}) {
      for (const auto& [before, after] : *list) {
        cudaEventDestroy(before);
        cudaEventDestroy(after);
      }
    }
  }

  // Makes `compute` wait for `done`, timed.
  void Wait(cudaStream_t compute, cudaEvent_t done) {
    std::lock_guard<std::mutex> lock(mu_);
    std::pair<cudaEvent_t, cudaEvent_t> events;
    if (free_.empty()) {
      CudaOk(cudaEventCreate(&events.first), "cudaEventCreate");
      CudaOk(cudaEventCreate(&events.second), "cudaEventCreate");
    } else {
      events = free_.back();
      free_.pop_back();
    }
    CudaOk(cudaEventRecord(events.first, compute), "cudaEventRecord");
    CudaOk(cudaStreamWaitEvent(compute, done, 0), "cudaStreamWaitEvent");
    CudaOk(cudaEventRecord(events.second, compute), "cudaEventRecord");
    pending_.push_back(events);
  }

  // The stalls timed since the last call, in seconds (waits until they have happened).
  double TakeSeconds() {
    std::lock_guard<std::mutex> lock(mu_);
    double seconds = 0;
    for (const auto& [before, after] : pending_) {
      CudaOk(cudaEventSynchronize(after), "cudaEventSynchronize");
      float ms = 0;
      CudaOk(cudaEventElapsedTime(&ms, before, after), "cudaEventElapsedTime");
      seconds += ms / 1e3;
      free_.emplace_back(before, after);
    }
    pending_.clear();
    return seconds;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> pending_, free_;
};

class NcclPending final : public PendingCollective {
 public:
  // `timer`: time the compute stream's wait (a collective the caller overlaps with its
  // compute); null for the blocking calls.
  NcclPending(std::shared_ptr<DoneEvent> done, cudaStream_t compute, std::shared_ptr<WaitTimer> timer)
      : done_(std::move(done)), compute_(compute), timer_(std::move(timer)) {}
  ~NcclPending() override {
    if (!waited_) Wait();
  }
  bool Test() override { return done_->Finished(); }
  void Wait() override {
    if (!waited_) {
      if (timer_ != nullptr) {
        timer_->Wait(compute_, done_->event);
      } else {
        CudaOk(cudaStreamWaitEvent(compute_, done_->event, 0), "cudaStreamWaitEvent");
      }
    }
    waited_ = true;
  }

 private:
  std::shared_ptr<DoneEvent> done_;
  cudaStream_t compute_;
  std::shared_ptr<WaitTimer> timer_;
  bool waited_ = false;
};

class NcclComm final : public Comm {
 public:
  NcclComm(std::unique_ptr<Comm> host, ncclComm_t comm, cudaStream_t compute, int world_rank,
           const NcclOptions& options)
      : host_(std::move(host)), comm_(comm), compute_(compute), world_rank_(world_rank), options_(options) {
    CudaOk(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    CudaOk(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreate");
    watchdog_ = std::make_unique<Watchdog>(comm_, host_->name(), world_rank_, host_->size(), options_.timeout_seconds);
  }

  ~NcclComm() override {
    watchdog_.reset();
    // Work still queued finishes first; a destroyed communicator with work in flight is
    // undefined. During static destruction the runtime may be gone: then leave it all.
    const cudaError_t state = cudaStreamSynchronize(stream_);
    if (state == cudaErrorCudartUnloading || state == cudaErrorContextIsDestroyed) return;
    ncclCommDestroy(comm_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
    cudaGetLastError();
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }
  double TakeDeviceWaitSeconds() override { return wait_timer_->TakeSeconds(); }
  cudaStream_t stream() const { return stream_; }

  std::unique_ptr<PendingCollective> StartAllReduce(void* data, int64_t count, DType dtype, ReduceOp op) override {
    if (!DeviceCall(data, nullptr)) {
      HostTraffic counted(this);
      return host_->StartAllReduce(data, count, dtype, op);
    }
    PMOL_CHECK(count >= 0);
    CountAllReduce(count * static_cast<int64_t>(DTypeSize(dtype)));
    return Launch(
        "all-reduce",
        [&] {
          NcclOk(ncclAllReduce(data, data, count, NcclType(dtype), NcclOp(op), comm_, stream_), "all-reduce",
                 name());
        },
        /*timed=*/true);
  }

  std::unique_ptr<PendingCollective> StartReduceScatter(const void* send, void* recv, const std::vector<int64_t>& counts,
                                                        DType dtype, ReduceOp op) override {
    PMOL_CHECK(static_cast<int>(counts.size()) == size());
    if (!DeviceCall(send, recv)) {
      HostTraffic counted(this);
      return host_->StartReduceScatter(send, recv, counts, dtype, op);
    }
    const size_t esize = DTypeSize(dtype);
    CountReduceScatter(Sum(counts) * esize, counts[rank()] * esize);
    return Launch("reduce-scatter", [&] {
      if (options_.even_blocks_fast_path && AllEqual(counts)) {
        NcclOk(ncclReduceScatter(send, recv, counts[0], NcclType(dtype), NcclOp(op), comm_, stream_), "reduce-scatter",
               name());
        return;
      }
      const std::vector<int64_t> offsets = Offsets(counts);
      NcclOk(ncclGroupStart(), "group start", name());
      for (int q = 0; q < size(); ++q) {
        if (counts[q] == 0) continue;
        NcclOk(ncclReduce(At(send, offsets[q], dtype), q == rank() ? recv : nullptr, counts[q], NcclType(dtype),
                          NcclOp(op), q, comm_, stream_),
               "reduce-scatter (reduce)", name());
      }
      NcclOk(ncclGroupEnd(), "reduce-scatter", name());
    }, /*timed=*/true);
  }

  void AllGather(const void* send, void* recv, const std::vector<int64_t>& counts, DType dtype) override {
    PMOL_CHECK(static_cast<int>(counts.size()) == size());
    if (!DeviceCall(send, recv)) {
      HostTraffic counted(this);
      host_->AllGather(send, recv, counts, dtype);
      return;
    }
    const size_t esize = DTypeSize(dtype);
    CountAllGather(Sum(counts) * esize, counts[rank()] * esize);
    Launch("all-gather", [&] {
      if (options_.even_blocks_fast_path && AllEqual(counts)) {
        NcclOk(ncclAllGather(send, recv, counts[0], NcclType(dtype), comm_, stream_), "all-gather", name());
        return;
      }
      const std::vector<int64_t> offsets = Offsets(counts);
      NcclOk(ncclGroupStart(), "group start", name());
      for (int q = 0; q < size(); ++q) {
        if (counts[q] == 0) continue;
        NcclOk(ncclBroadcast(q == rank() ? send : nullptr, At(recv, offsets[q], dtype), counts[q], NcclType(dtype), q,
                             comm_, stream_),
               "all-gather (broadcast)", name());
      }
      NcclOk(ncclGroupEnd(), "all-gather", name());
    })->Wait();
  }

  void AllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                const std::vector<int64_t>& recv_counts, DType dtype) override {
    PMOL_CHECK(static_cast<int>(send_counts.size()) == size() && static_cast<int>(recv_counts.size()) == size());
    if (!DeviceCall(send, recv)) {
      HostTraffic counted(this);
      host_->AllToAll(send, send_counts, recv, recv_counts, dtype);
      return;
    }
    CountAllToAll((Sum(send_counts) - send_counts[rank()]) * static_cast<int64_t>(DTypeSize(dtype)));
    Launch("all-to-all", [&] {
      const std::vector<int64_t> send_offsets = Offsets(send_counts), recv_offsets = Offsets(recv_counts);
      NcclOk(ncclGroupStart(), "group start", name());
      for (int q = 0; q < size(); ++q) {
        if (send_counts[q] > 0) {
          NcclOk(ncclSend(At(send, send_offsets[q], dtype), send_counts[q], NcclType(dtype), q, comm_, stream_),
                 "all-to-all (send)", name());
        }
        if (recv_counts[q] > 0) {
          NcclOk(ncclRecv(At(recv, recv_offsets[q], dtype), recv_counts[q], NcclType(dtype), q, comm_, stream_),
                 "all-to-all (receive)", name());
        }
      }
      NcclOk(ncclGroupEnd(), "all-to-all", name());
    })->Wait();
  }

  void Broadcast(void* data, int64_t count, DType dtype, int root) override {
    PMOL_CHECK(count >= 0 && root >= 0 && root < size());
    if (!DeviceCall(data, nullptr)) {
      HostTraffic counted(this);
      host_->Broadcast(data, count, dtype, root);
      return;
    }
    CountBroadcast(count * static_cast<int64_t>(DTypeSize(dtype)), root);
    Launch("broadcast", [&] {
      NcclOk(ncclBroadcast(data, data, count, NcclType(dtype), root, comm_, stream_), "broadcast", name());
    })->Wait();
  }

  void Barrier() override {
    HostTraffic counted(this);
    host_->Barrier();
  }

  std::unique_ptr<Comm> Split(int color, int key, const std::string& name) override {
    std::unique_ptr<Comm> host = host_->Split(color, key, name);
    ncclComm_t part = nullptr;
    NcclOk(ncclCommSplit(comm_, color, key, &part, nullptr), "communicator split", this->name());
    return std::make_unique<NcclComm>(std::move(host), part, compute_, world_rank_, options_);
  }

 private:
  // Adds the traffic of a host-buffer collective, which the host Comm counts, to this
  // Comm's stats as well (from construction to destruction).
  class HostTraffic {
   public:
    explicit HostTraffic(NcclComm* comm) : comm_(comm), before_(comm->host_->stats()) {}
    ~HostTraffic() {
      const CommStats& after = comm_->host_->stats();
      CommStats& stats = comm_->stats_;
      stats.all_reduce_bytes += after.all_reduce_bytes - before_.all_reduce_bytes;
      stats.reduce_scatter_bytes += after.reduce_scatter_bytes - before_.reduce_scatter_bytes;
      stats.all_gather_bytes += after.all_gather_bytes - before_.all_gather_bytes;
      stats.all_to_all_bytes += after.all_to_all_bytes - before_.all_to_all_bytes;
      stats.broadcast_bytes += after.broadcast_bytes - before_.broadcast_bytes;
      stats.calls += after.calls - before_.calls;
    }

   private:
    NcclComm* comm_;
    CommStats before_;
  };

  // Enqueues `enqueue` (NCCL calls on stream_) after the compute stream's work so far.
  // (The caller has counted the call and its bytes.)
  // timed: the compute stream's Wait() for it counts in TakeDeviceWaitSeconds().
  template <typename Enqueue>
  std::unique_ptr<PendingCollective> Launch(const char* what, Enqueue&& enqueue, bool timed = false) {
    CudaOk(cudaEventRecord(ready_, compute_), "cudaEventRecord");
    CudaOk(cudaStreamWaitEvent(stream_, ready_, 0), "cudaStreamWaitEvent");
    enqueue();
    auto done = std::make_shared<DoneEvent>();
    CudaOk(cudaEventRecord(done->event, stream_), "cudaEventRecord");
    watchdog_->Watch(done, what);
    return std::make_unique<NcclPending>(std::move(done), compute_, timed ? wait_timer_ : nullptr);
  }

  std::unique_ptr<Comm> host_;
  ncclComm_t comm_;
  cudaStream_t compute_;
  int world_rank_;
  NcclOptions options_;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  std::shared_ptr<WaitTimer> wait_timer_ = std::make_shared<WaitTimer>();
  std::unique_ptr<Watchdog> watchdog_;
};

}  // namespace

bool NcclAvailable() { return true; }

absl::StatusOr<std::unique_ptr<Comm>> CreateNcclComm(std::unique_ptr<Comm> host, Backend* backend,
                                                     const NcclOptions& options) {
  PMOL_CHECK(host != nullptr);
  if (!(options.timeout_seconds > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL: collective timeout ", options.timeout_seconds, " s: must be > 0"));
  }
  void* compute = backend == nullptr ? nullptr : CudaBackendStream(backend);
  if (compute == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: the collectives' buffers must live on a CUDA backend, not ",
                     backend == nullptr ? std::string("none") : backend->Name()));
  }
  // The id travels as 32 i32 (128 bytes) over the host Comm.
  static_assert(sizeof(ncclUniqueId) % sizeof(int32_t) == 0);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  ncclResult_t made = host->rank() == 0 ? ncclGetUniqueId(&id) : ncclSuccess;
  double failed = made == ncclSuccess ? 0 : 1;  // every rank learns whether rank 0 got an id
  host->AllReduce(&failed, 1, DType::kF64, ReduceOp::kMax);
  if (failed != 0) {
    return absl::UnavailableError(absl::StrCat("NCCL: rank 0 could not create the communicator's id",
                                               made == ncclSuccess ? "" : absl::StrCat(": ", ncclGetErrorString(made))));
  }
  host->Broadcast(&id, sizeof(id) / sizeof(int32_t), DType::kI32, 0);
  ncclComm_t comm = nullptr;
  const ncclResult_t joined = ncclCommInitRank(&comm, host->size(), id, host->rank());
  if (joined != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("NCCL: rank ", host->rank(), " could not join the ", host->name(),
                                               " communicator (", host->size(), " ranks): ",
                                               ncclGetErrorString(joined), " (", ncclGetLastError(nullptr), ")"));
  }
  const int world_rank = host->rank();
  return std::unique_ptr<Comm>(
      std::make_unique<NcclComm>(std::move(host), comm, static_cast<cudaStream_t>(compute), world_rank, options));
}

void* NcclCommStream(Comm* comm) {
  auto* nccl = dynamic_cast<NcclComm*>(comm);
  return nccl == nullptr ? nullptr : static_cast<void*>(nccl->stream());
}

}  // namespace pmol::dist

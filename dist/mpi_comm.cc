// MPI backend of Comm; see mpi_comm.h.
#include "dist/mpi_comm.h"

#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"

namespace pmol::dist {
namespace {

MPI_Datatype MpiType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return MPI_FLOAT;
    case DType::kF64: return MPI_DOUBLE;
    case DType::kI32: return MPI_INT32_T;
    case DType::kBF16:
    case DType::kF16: return MPI_UINT16_T;  // moved, never reduced (see Reduce below)
  }
  return MPI_BYTE;
}

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_SUM;
}

void CheckReducible(DType dtype) {
  // MPI has no 16-bit float reductions; mixed precision reduces in f32.
  PMOL_CHECK(dtype == DType::kF32 || dtype == DType::kF64 || dtype == DType::kI32);
}

std::vector<int> IntCounts(const std::vector<int64_t>& counts) {
  std::vector<int> out(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    PMOL_CHECK(counts[i] >= 0 && counts[i] <= INT32_MAX);
    out[i] = static_cast<int>(counts[i]);
  }
  return out;
}

std::vector<int> Displacements(const std::vector<int>& counts) {
  std::vector<int> displs(counts.size(), 0);
  int64_t at = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    PMOL_CHECK(at <= INT32_MAX);
    displs[i] = static_cast<int>(at);
    at += counts[i];
  }
  return displs;
}

int64_t Sum(const std::vector<int64_t>& v) {
  int64_t s = 0;
  for (int64_t x : v) s += x;
  return s;
}

class MpiComm final : public Comm {
 public:
  MpiComm(MPI_Comm comm, std::string name, double timeout_seconds, int world_rank)
      : comm_(comm), name_(std::move(name)), timeout_seconds_(timeout_seconds), world_rank_(world_rank) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<PendingCollective> StartAllReduce(void* data, int64_t count, DType dtype,
                                                    ReduceOp op) override {
    CheckReducible(dtype);
    PMOL_CHECK(count >= 0 && count <= INT32_MAX);
    CountAllReduce(count * static_cast<int64_t>(DTypeSize(dtype)));
    auto pending = std::make_unique<MpiPending>(this, "all-reduce");
    MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), MpiType(dtype), MpiOp(op), comm_,
                   &pending->request);
    return pending;
  }

  std::unique_ptr<PendingCollective> StartReduceScatter(const void* send, void* recv,
                                                        const std::vector<int64_t>& counts, DType dtype,
                                                        ReduceOp op) override {
    CheckReducible(dtype);
    PMOL_CHECK(static_cast<int>(counts.size()) == size_);
    const size_t esize = DTypeSize(dtype);
    CountReduceScatter(Sum(counts) * esize, counts[rank_] * esize);
    std::vector<int> c = IntCounts(counts);  // MPI may read the counts until completion
    auto pending = std::make_unique<MpiPending>(this, "reduce-scatter");
    pending->counts = std::move(c);
    MPI_Ireduce_scatter(send, recv, pending->counts.data(), MpiType(dtype), MpiOp(op), comm_, &pending->request);
    return pending;
  }

  void AllGather(const void* send, void* recv, const std::vector<int64_t>& counts, DType dtype) override {
    PMOL_CHECK(static_cast<int>(counts.size()) == size_);
    const size_t esize = DTypeSize(dtype);
    CountAllGather(Sum(counts) * esize, counts[rank_] * esize);
    std::vector<int> c = IntCounts(counts), displs = Displacements(c);
    MPI_Request request;
    MPI_Iallgatherv(send, c[rank_], MpiType(dtype), recv, c.data(), displs.data(), MpiType(dtype), comm_,
                    &request);
    Wait(request, "all-gather");
  }

  void AllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                const std::vector<int64_t>& recv_counts, DType dtype) override {
    PMOL_CHECK(static_cast<int>(send_counts.size()) == size_ && static_cast<int>(recv_counts.size()) == size_);
    CountAllToAll((Sum(send_counts) - send_counts[rank_]) * static_cast<int64_t>(DTypeSize(dtype)));
    std::vector<int> sc = IntCounts(send_counts), rc = IntCounts(recv_counts);
    std::vector<int> sd = Displacements(sc), rd = Displacements(rc);
    MPI_Request request;
    MPI_Ialltoallv(send, sc.data(), sd.data(), MpiType(dtype), recv, rc.data(), rd.data(), MpiType(dtype),
                   comm_, &request);
    Wait(request, "all-to-all");
  }

  void Broadcast(void* data, int64_t count, DType dtype, int root) override {
    PMOL_CHECK(count >= 0 && count <= INT32_MAX && root >= 0 && root < size_);
    CountBroadcast(count * static_cast<int64_t>(DTypeSize(dtype)), root);
    MPI_Request request;
    MPI_Ibcast(data, static_cast<int>(count), MpiType(dtype), root, comm_, &request);
    Wait(request, "broadcast");
  }

  void Barrier() override {
    ++stats_.calls;
    MPI_Request request;
    MPI_Ibarrier(comm_, &request);
    Wait(request, "barrier");
  }

  std::unique_ptr<Comm> Split(int color, int key, const std::string& name) override {
    MPI_Comm part;
    MPI_Comm_split(comm_, color, key, &part);
    return std::make_unique<MpiComm>(part, name, timeout_seconds_, world_rank_);
  }

 private:
  // A request of this communicator; Wait() polls it with the communicator's deadline.
  struct MpiPending final : PendingCollective {
    MpiPending(MpiComm* comm, const char* what) : comm(comm), what(what) {}
    ~MpiPending() override {
      if (!done) Wait();
    }
    bool Test() override {
      if (!done) MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      return done != 0;
    }
    void Wait() override {
      if (!done) comm->Wait(request, what);
      done = 1;
    }
    MpiComm* comm;
    const char* what;
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<int> counts;
    int done = 0;
  };

  // Polls the request: spins briefly, then sleeps in growing steps (up to 1 ms), so that
  // ranks waiting on a slow peer leave the cores to it; aborts the job at the deadline.
  void Wait(MPI_Request& request, const char* what) {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    int done = 0;
    for (int spin = 0; spin < 2000 && !done; ++spin) MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    std::chrono::microseconds pause(10);
    while (!done) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (!done && std::chrono::duration<double>(Clock::now() - start).count() > timeout_seconds_) {
        std::fprintf(stderr,
                     "pmol: rank %d: %s on the %s group (%d ranks) did not complete within %.0f s: "
                     "another rank has stopped or died (see the launcher's messages); aborting the "
                     "job, resume it from the last checkpoint\n",
                     world_rank_, what, name_.c_str(), size_, timeout_seconds_);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
        std::_Exit(1);
      }
    }
  }

  MPI_Comm comm_;
  std::string name_;
  double timeout_seconds_;
  int world_rank_ = 0;
  int rank_ = 0, size_ = 1;
};

void FinalizeMpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

bool LaunchedByMpiLauncher() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<MpiWorld> InitMpiWorld(double timeout_seconds) {
  if (!(timeout_seconds > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("parallel.collective_timeout_s = ", timeout_seconds, ": must be > 0"));
  }
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed (is this process started by mpirun or srun?)");
    }
    std::atexit(FinalizeMpi);
  }
  MpiWorld out;
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  out.world = std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", timeout_seconds, world_rank);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &out.local_rank);
  MPI_Comm_size(node, &out.local_size);
  MPI_Comm_free(&node);
  return out;
}

}  // namespace pmol::dist

// Single-process Comm; see local_comm.h.
#include "dist/local_comm.h"

#include <cstring>

#include "kernels/check.h"

namespace pmol::dist {
namespace {

class Done final : public PendingCollective {
 public:
  bool Test() override { return true; }
  void Wait() override {}
};

}  // namespace

void LocalComm::CopyIfDistinct(const void* src, void* dst, int64_t count, DType dtype) {
  if (src == dst || count <= 0) return;
  const size_t bytes = count * DTypeSize(dtype);
  if (memory_ != nullptr) {
    memory_->CopyOnDevice(dst, src, bytes);
  } else {
    std::memmove(dst, src, bytes);
  }
}

std::unique_ptr<PendingCollective> LocalComm::StartAllReduce(void*, int64_t count, DType dtype, ReduceOp) {
  CountAllReduce(count * static_cast<int64_t>(DTypeSize(dtype)));
  return std::make_unique<Done>();
}

std::unique_ptr<PendingCollective> LocalComm::StartReduceScatter(const void* send, void* recv,
                                                                 const std::vector<int64_t>& counts,
                                                                 DType dtype, ReduceOp) {
  PMOL_CHECK(counts.size() == 1);
  CountReduceScatter(counts[0], counts[0]);
  CopyIfDistinct(send, recv, counts[0], dtype);
  return std::make_unique<Done>();
}

void LocalComm::AllGather(const void* send, void* recv, const std::vector<int64_t>& counts, DType dtype) {
  PMOL_CHECK(counts.size() == 1);
  CountAllGather(counts[0], counts[0]);
  CopyIfDistinct(send, recv, counts[0], dtype);
}

void LocalComm::AllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                         const std::vector<int64_t>& recv_counts, DType dtype) {
  PMOL_CHECK(send_counts.size() == 1 && recv_counts.size() == 1 && send_counts[0] == recv_counts[0]);
  CountAllToAll(0);
  CopyIfDistinct(send, recv, send_counts[0], dtype);
}

void LocalComm::Broadcast(void*, int64_t count, DType dtype, int root) {
  PMOL_CHECK(root == 0);
  CountBroadcast(count * static_cast<int64_t>(DTypeSize(dtype)), root);
}

void LocalComm::Barrier() { ++stats_.calls; }

std::unique_ptr<Comm> LocalComm::Split(int, int, const std::string& name) {
  return std::make_unique<LocalComm>(name, memory_);
}

}  // namespace pmol::dist

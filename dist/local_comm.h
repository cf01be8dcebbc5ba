// The Comm of a world of one process (no MPI): every collective is the identity (a copy
// where the output buffer is separate), done when it starts, and moves no bytes. The
// copies go through `memory`, the backend whose buffers the callers pass (GPU memory for
// CUDA), or memmove on host memory when it is null.
#ifndef DIST_LOCAL_COMM_H_
#define DIST_LOCAL_COMM_H_

#include <memory>
#include <string>

#include "dist/comm.h"
#include "kernels/backend.h"

namespace pmol::dist {

class LocalComm final : public Comm {
 public:
  explicit LocalComm(std::string name = "world", Backend* memory = nullptr)
      : name_(std::move(name)), memory_(memory) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<PendingCollective> StartAllReduce(void* data, int64_t count, DType dtype,
                                                    ReduceOp op) override;
  std::unique_ptr<PendingCollective> StartReduceScatter(const void* send, void* recv,
                                                        const std::vector<int64_t>& counts, DType dtype,
                                                        ReduceOp op) override;
  void AllGather(const void* send, void* recv, const std::vector<int64_t>& counts, DType dtype) override;
  void AllToAll(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                const std::vector<int64_t>& recv_counts, DType dtype) override;
  void Broadcast(void* data, int64_t count, DType dtype, int root) override;
  void Barrier() override;
  std::unique_ptr<Comm> Split(int color, int key, const std::string& name) override;

 private:
  void CopyIfDistinct(const void* src, void* dst, int64_t count, DType dtype);

  std::string name_;
  Backend* memory_;
};

}  // namespace pmol::dist

#endif  // DIST_LOCAL_COMM_H_

// The Comm of a world of one process (no MPI): every collective is the identity (a copy
// where the output buffer is separate), done when it starts, and moves no bytes.
#ifndef DIST_LOCAL_COMM_H_
#define DIST_LOCAL_COMM_H_

#include <memory>
#include <string>

#include "dist/comm.h"

namespace pmol::dist {

class LocalComm final : public Comm {
 public:
  explicit LocalComm(std::string name = "world") : name_(std::move(name)) {}

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
  std::string name_;
};

}  // namespace pmol::dist

#endif  // DIST_LOCAL_COMM_H_

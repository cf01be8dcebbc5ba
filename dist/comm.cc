// Traffic accounting and helpers shared by every Comm; see comm.h.
#include "dist/comm.h"

namespace pmol::dist {

void Comm::CountAllReduce(int64_t bytes) {
  ++stats_.calls;
  const int n = size();
  if (n > 1) stats_.all_reduce_bytes += 2 * (n - 1) * bytes / n;
}

void Comm::CountReduceScatter(int64_t total_bytes, int64_t own_bytes) {
  ++stats_.calls;
  if (size() > 1) stats_.reduce_scatter_bytes += total_bytes - own_bytes;
}

void Comm::CountAllGather(int64_t total_bytes, int64_t own_bytes) {
  ++stats_.calls;
  if (size() > 1) stats_.all_gather_bytes += total_bytes - own_bytes;
}

void Comm::CountAllToAll(int64_t bytes_to_others) {
  ++stats_.calls;
  stats_.all_to_all_bytes += bytes_to_others;
}

void Comm::CountBroadcast(int64_t bytes, int root) {
  ++stats_.calls;
  // A ring from the root: every rank forwards the data except the one before the root.
  if (size() > 1 && rank() != (root + size() - 1) % size()) stats_.broadcast_bytes += bytes;
}

std::string Comm::BroadcastString(const std::string& value, int root) {
  double length = static_cast<double>(value.size());
  Broadcast(&length, 1, DType::kF64, root);
  std::string out = rank() == root ? value : std::string(static_cast<size_t>(length), '\0');
  // Bytes travel as I32 words; pad to a multiple of 4.
  std::vector<int32_t> words((out.size() + 3) / 4, 0);
  if (rank() == root && !out.empty()) std::copy(out.begin(), out.end(), reinterpret_cast<char*>(words.data()));
  if (!words.empty()) Broadcast(words.data(), static_cast<int64_t>(words.size()), DType::kI32, root);
  if (rank() != root && !out.empty()) {
    const char* bytes = reinterpret_cast<const char*>(words.data());
    std::copy(bytes, bytes + out.size(), out.begin());
  }
  return out;
}

absl::Status AgreeOnStatus(Comm& comm, const absl::Status& status) {
  if (comm.size() == 1) return status;
  double first = status.ok() ? comm.size() : comm.rank();
  comm.AllReduce(&first, 1, DType::kF64, ReduceOp::kMin);
  if (first >= comm.size()) return absl::OkStatus();
  const int root = static_cast<int>(first);
  double code = static_cast<double>(status.code());
  comm.Broadcast(&code, 1, DType::kF64, root);
  const std::string message = comm.BroadcastString(std::string(status.message()), root);
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(code)),
                      "rank " + std::to_string(root) + ": " + message);
}

std::vector<int64_t> EvenBlocks(int64_t total, int parts) {
  std::vector<int64_t> blocks(parts, total / parts);
  for (int64_t i = 0; i < total % parts; ++i) ++blocks[i];
  return blocks;
}

}  // namespace pmol::dist

// ZeRO stages 0-2 over Comm; see zero_optimizer.h.
#include "dist/zero_optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/check.h"
#include "pmol/core/status.h"
#include "pmol/optim/grad_clip.h"

namespace pmol::dist {
namespace {

char* At(Tensor& t, int64_t element) { return static_cast<char*>(t.data()) + element * DTypeSize(t.dtype()); }
const char* At(const Tensor& t, int64_t element) {
  return static_cast<const char*>(t.data()) + element * DTypeSize(t.dtype());
}

}  // namespace

absl::StatusOr<std::unique_ptr<ZeroOptimizer>> ZeroOptimizer::Create(Comm* comm, const NamedTensors& params,
                                                                     const NamedTensors& grads,
                                                                     const std::vector<bool>& decay,
                                                                     const AdamWOptions& adam,
                                                                     const ZeroOptions& options) {
  if (options.stage < 0 || options.stage > 2) {
    return absl::InvalidArgumentError(absl::StrCat("parallel.zero_stage = ", options.stage, ": must be 0, 1 or 2"));
  }
  if (options.bucket_bytes <= 0) return absl::InvalidArgumentError("parallel.bucket_mb: must be > 0");
  if (params.size() != grads.size() || params.size() != decay.size()) {
    return absl::InvalidArgumentError("ZeRO optimizer: parameters, gradients and decay flags differ in number");
  }
  PMOL_RETURN_IF_ERROR(ValidateAdamWOptions(adam));
  std::unique_ptr<ZeroOptimizer> z(new ZeroOptimizer());
  z->comm_ = comm;
  z->options_ = options;
  z->offsets_.push_back(0);
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    const Tensor& g = grads[i].second;
    if (!p.defined() || !g.defined() || p.shape() != g.shape() || p.backend() != g.backend()) {
      return absl::InvalidArgumentError(
          absl::StrCat("ZeRO optimizer: '", name, "' and its gradient differ in shape or device"));
    }
    if (i == 0) {
      z->backend_ = p.backend();
      z->param_dtype_ = p.dtype();
      z->grad_dtype_ = g.dtype();
    }
    if (p.dtype() != z->param_dtype_ || g.dtype() != z->grad_dtype_ || p.backend() != z->backend_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ZeRO optimizer: '", name, "' is ", DTypeName(p.dtype()), " with a ", DTypeName(g.dtype()),
          " gradient; every trainable tensor must share the dtype and device of '", params[0].first, "'"));
    }
    if (g.dtype() != DType::kF32 && g.dtype() != DType::kF64) {
      return absl::InvalidArgumentError(absl::StrCat("ZeRO optimizer: the gradient of '", name, "' is ",
                                                     DTypeName(g.dtype()), "; reductions need F32 or F64"));
    }
    z->params_.push_back(p.Reshape({p.numel()}));
    z->grads_.push_back(g.Reshape({g.numel()}));
    z->offsets_.push_back(z->offsets_.back() + p.numel());
    absl::StrAppend(&z->signature_, i ? "," : "", name, ":", p.numel());
  }
  const int n = comm->size(), r = comm->rank();
  z->flat_size_ = z->offsets_.back();
  const std::vector<int64_t> blocks = EvenBlocks(z->flat_size_, n);
  z->shard_starts_.assign(1, 0);
  for (int64_t b : blocks) z->shard_starts_.push_back(z->shard_starts_.back() + b);
  if (options.stage == 0) {
    z->shard_begin_ = 0;
    z->shard_end_ = z->flat_size_;
  } else {
    z->shard_begin_ = z->shard_starts_[r];
    z->shard_end_ = z->shard_starts_[r + 1];
  }
  if (z->backend_ == nullptr) z->backend_ = GetBackend(DeviceType::kCpu).value();
  const int64_t gsize = static_cast<int64_t>(DTypeSize(z->grad_dtype_));
  z->bucket_elements_ = std::max<int64_t>(1, options.bucket_bytes / gsize);
  const int64_t scratch = std::min(z->bucket_elements_, std::max<int64_t>(z->flat_size_, 1));
  for (int slot = 0; slot < kSlots; ++slot) {
    z->send_[slot] = Tensor::Empty({scratch}, z->grad_dtype_, z->backend_);
    if (options.stage > 0) z->recv_[slot] = Tensor::Empty({scratch}, z->grad_dtype_, z->backend_);
  }
  z->final_.assign(params.size(), 0);
  for (int64_t b = 0; b < z->num_buckets(); ++b) {
    const std::vector<Segment> segments =
        z->Segments(b * z->bucket_elements_, std::min(z->flat_size_, (b + 1) * z->bucket_elements_));
    z->bucket_tensors_.emplace_back(segments.front().tensor, segments.back().tensor);
  }
  z->param_bucket_ = Tensor::Empty({scratch}, z->param_dtype_, z->backend_);
  z->param_send_ = Tensor::Empty({scratch}, z->param_dtype_, z->backend_);

  z->adam_ = std::make_unique<AdamW>(adam);
  if (options.stage == 0) {
    for (size_t i = 0; i < params.size(); ++i) {
      PMOL_RETURN_IF_ERROR(z->adam_->AddParam(params[i].first, z->params_[i], z->grads_[i], decay[i]));
    }
  } else {
    z->shard_grad_ = Tensor::Zeros({z->shard_end_ - z->shard_begin_}, z->grad_dtype_, z->backend_);
    for (const Segment& s : z->Segments(z->shard_begin_, z->shard_end_)) {
      const int64_t at = z->offsets_[s.tensor] + s.offset - z->shard_begin_;
      PMOL_RETURN_IF_ERROR(z->adam_->AddParam(params[s.tensor].first, z->params_[s.tensor].Rows(s.offset, s.count),
                                              z->shard_grad_.Rows(at, s.count), decay[s.tensor]));
    }
  }
  return z;
}

std::vector<ZeroOptimizer::Segment> ZeroOptimizer::Segments(int64_t begin, int64_t end) const {
  std::vector<Segment> out;
  if (begin >= end) return out;
  size_t t = std::upper_bound(offsets_.begin(), offsets_.end(), begin) - offsets_.begin() - 1;
  for (int64_t at = begin; at < end; ++t) {
    const int64_t tensor_end = offsets_[t + 1];
    if (tensor_end <= at) continue;  // empty tensors
    const int64_t stop = std::min(end, tensor_end);
    out.push_back({t, at - offsets_[t], stop - at});
    at = stop;
  }
  return out;
}

void ZeroOptimizer::Pack(const std::vector<Tensor>& tensors, int64_t begin, int64_t end, void* buffer) const {
  char* dst = static_cast<char*>(buffer);
  for (const Segment& s : Segments(begin, end)) {
    const size_t bytes = s.count * DTypeSize(tensors[s.tensor].dtype());
    backend_->CopyOnDevice(dst, At(tensors[s.tensor], s.offset), bytes);
    dst += bytes;
  }
}

void ZeroOptimizer::Unpack(const void* buffer, int64_t begin, int64_t end, std::vector<Tensor>& tensors) const {
  const char* src = static_cast<const char*>(buffer);
  for (const Segment& s : Segments(begin, end)) {
    const size_t bytes = s.count * DTypeSize(tensors[s.tensor].dtype());
    backend_->CopyOnDevice(At(tensors[s.tensor], s.offset), src, bytes);
    src += bytes;
  }
}

std::vector<int64_t> ZeroOptimizer::ShardCounts(int64_t begin, int64_t end) const {
  std::vector<int64_t> counts(comm_->size());
  for (int q = 0; q < comm_->size(); ++q) {
    counts[q] = std::max<int64_t>(0, std::min(end, shard_starts_[q + 1]) - std::max(begin, shard_starts_[q]));
  }
  return counts;
}

void ZeroOptimizer::Arm() {
  reducing_ = !(options_.stage == 0 && comm_->size() == 1);  // one replica: nothing to reduce
  if (!reducing_ && options_.stage == 0) reduced_ = true;
  next_bucket_ = num_buckets() - 1;
  buckets_started_ = 0;
  std::fill(final_.begin(), final_.end(), 0);
}

void ZeroOptimizer::StartBuckets(bool all) {
  for (; next_bucket_ >= 0; --next_bucket_) {
    if (!all) {
      const auto [first, last] = bucket_tensors_[next_bucket_];
      bool ready = true;
      for (size_t t = first; t <= last && ready; ++t) ready = final_[t] || offsets_[t + 1] == offsets_[t];
      if (!ready) return;
    }
    StartBucket(next_bucket_);
  }
}

void ZeroOptimizer::StartBucket(int64_t bucket) {
  if (static_cast<int>(in_flight_.size()) == kSlots) CompleteOldest();
  const int slot = static_cast<int>(buckets_started_++ % kSlots);
  const int64_t b0 = bucket * bucket_elements_, b1 = std::min(flat_size_, b0 + bucket_elements_);
  Pack(grads_, b0, b1, send_[slot].data());
  std::unique_ptr<PendingCollective> request;
  if (options_.stage == 0) {
    request = comm_->StartAllReduce(send_[slot].data(), b1 - b0, grad_dtype_, ReduceOp::kSum);
  } else {
    // Stage 1 receives its block straight into the shard; stage 2 adds it there later.
    const int r = comm_->rank();
    const std::vector<int64_t> counts = ShardCounts(b0, b1);
    const int64_t own_begin = std::max(b0, shard_starts_[r]);
    void* recv = options_.stage == 2 || counts[r] == 0 ? recv_[slot].data()
                                                        : At(shard_grad_, own_begin - shard_begin_);
    request = comm_->StartReduceScatter(send_[slot].data(), recv, counts, grad_dtype_, ReduceOp::kSum);
  }
  in_flight_.push_back({bucket, slot, std::move(request)});
}

void ZeroOptimizer::CompleteOldest() {
  InFlight& oldest = in_flight_.front();
  oldest.request->Wait();
  const int64_t b0 = oldest.bucket * bucket_elements_, b1 = std::min(flat_size_, b0 + bucket_elements_);
  if (options_.stage == 0) {
    Unpack(send_[oldest.slot].data(), b0, b1, grads_);
  } else if (options_.stage == 2) {
    const int r = comm_->rank();
    const int64_t own = ShardCounts(b0, b1)[r], own_begin = std::max(b0, shard_starts_[r]);
    if (own > 0) {
      backend_->Axpy(grad_dtype_, 1.0, recv_[oldest.slot].data(), At(shard_grad_, own_begin - shard_begin_), own);
    }
  }
  in_flight_.erase(in_flight_.begin());
}

void ZeroOptimizer::FinishBuckets() {
  StartBuckets(/*all=*/true);
  while (!in_flight_.empty()) CompleteOldest();
  reducing_ = false;
}

void ZeroOptimizer::AllGatherParams() {
  const int r = comm_->rank();
  for (int64_t b0 = 0; b0 < flat_size_; b0 += bucket_elements_) {
    const int64_t b1 = std::min(flat_size_, b0 + bucket_elements_);
    const std::vector<int64_t> counts = ShardCounts(b0, b1);
    const int64_t own_begin = std::max(b0, shard_starts_[r]);
    if (counts[r] > 0) Pack(params_, own_begin, own_begin + counts[r], param_send_.data());
    comm_->AllGather(param_send_.data(), param_bucket_.data(), counts, param_dtype_);
    Unpack(param_bucket_.data(), b0, b1, params_);
  }
}

void ZeroOptimizer::BeginStep() {
  if (options_.stage == 2) shard_grad_.SetZero();
  reducing_ = reduced_ = false;
}

void ZeroOptimizer::BeginMicroBatch(bool last) {
  if (options_.stage == 2 || last) {
    Arm();
  } else {
    reducing_ = false;
  }
}

void ZeroOptimizer::GradientReady(size_t i) {
  if (!reducing_) return;
  PMOL_CHECK(i < final_.size());
  final_[i] = 1;
  StartBuckets(/*all=*/false);
  // Testing the oldest request drives the transport (MPI progresses inside its calls).
  while (!in_flight_.empty() && in_flight_.front().request->Test()) CompleteOldest();
}

void ZeroOptimizer::AfterMicroBatch() {
  if (options_.stage == 2) {
    if (!reducing_) Arm();  // no BeginMicroBatch: reduce now
    FinishBuckets();
    for (Tensor& g : grads_) g.SetZero();
  } else if (reducing_) {
    FinishBuckets();
    reduced_ = true;
  }
}

double ZeroOptimizer::ReduceGradients() {
  if (options_.stage < 2 && !reduced_) {  // not reduced during the last backward
    Arm();
    if (reducing_) FinishBuckets();
    reduced_ = true;
  }
  if (options_.stage == 0) return GradSumOfSquares(grads_);  // the same reduced gradient on every rank
  return comm_->AllReduceSum(GradSumOfSquares({shard_grad_}));
}

void ZeroOptimizer::ClipToNorm(double norm, double max_norm) {
  if (options_.stage == 0) {
    ScaleToMaxNorm(grads_, norm, max_norm);
  } else {
    std::vector<Tensor> shard = {shard_grad_};
    ScaleToMaxNorm(shard, norm, max_norm);
  }
}

double ZeroOptimizer::ReduceAndClip(double max_norm) {
  const double norm = std::sqrt(ReduceGradients());
  ClipToNorm(norm, max_norm);
  return norm;
}

void ZeroOptimizer::Step(double lr) {
  adam_->Step(lr);
  if (options_.stage > 0 && comm_->size() > 1) AllGatherParams();
}

StatePiece ZeroOptimizer::ShardState() const {
  StatePiece piece;
  piece.begin = shard_begin_;
  piece.end = shard_end_;
  const NamedTensors state = adam_->NamedState();
  const DType state_dt = param_dtype_ == DType::kF64 ? DType::kF64 : DType::kF32;
  const int64_t n = shard_end_ - shard_begin_;
  piece.exp_avg = Tensor::Empty({n}, state_dt, backend_);
  piece.exp_avg_sq = Tensor::Empty({n}, state_dt, backend_);
  const bool master = param_dtype_ == DType::kBF16 || param_dtype_ == DType::kF16;
  if (master) piece.master = Tensor::Empty({n}, state_dt, backend_);
  int64_t at = 0;
  for (const auto& [name, t] : state) {
    if (name == AdamW::kStepName) continue;
    Tensor* dst = name.size() > 11 && name.compare(name.size() - 11, 11, ".exp_avg_sq") == 0 ? &piece.exp_avg_sq
                  : name.size() > 8 && name.compare(name.size() - 8, 8, ".exp_avg") == 0     ? &piece.exp_avg
                                                                                               : &piece.master;
    const int64_t count = t.numel();
    backend_->CopyOnDevice(At(*dst, at), t.data(), t.nbytes());
    if (dst == (master ? &piece.master : &piece.exp_avg_sq)) at += count;  // the slot's last tensor
  }
  PMOL_CHECK(at == n);
  return piece;
}

absl::Status ZeroOptimizer::LoadState(const std::vector<StatePiece>& pieces, int64_t step) {
  const DType state_dt = param_dtype_ == DType::kF64 ? DType::kF64 : DType::kF32;
  const bool master = param_dtype_ == DType::kBF16 || param_dtype_ == DType::kF16;
  const int64_t n = shard_end_ - shard_begin_;
  Tensor m = Tensor::Zeros({n}, state_dt, backend_), v = Tensor::Zeros({n}, state_dt, backend_);
  Tensor w = master ? Tensor::Zeros({n}, state_dt, backend_) : Tensor();
  // Coverage of [shard_begin, shard_end) by the pieces: mark covered elements by ranges.
  std::vector<std::pair<int64_t, int64_t>> covered;
  for (const StatePiece& p : pieces) {
    const int64_t lo = std::max(p.begin, shard_begin_), hi = std::min(p.end, shard_end_);
    if (lo >= hi) continue;
    if (p.exp_avg.numel() != p.end - p.begin || p.exp_avg_sq.numel() != p.end - p.begin ||
        (master && p.master.numel() != p.end - p.begin)) {
      return absl::DataLossError(absl::StrCat("optimizer state piece [", p.begin, ", ", p.end,
                                              ") does not hold ", p.end - p.begin, " elements per tensor"));
    }
    auto copy = [&](const Tensor& src, Tensor& dst) {
      const Tensor s = src.dtype() == state_dt ? src : src.ConvertTo(state_dt);
      const Tensor on_device = s.backend() == backend_ ? s : s.CopyTo(backend_);
      backend_->CopyOnDevice(At(dst, lo - shard_begin_), At(on_device, lo - p.begin),
                             (hi - lo) * DTypeSize(state_dt));
    };
    copy(p.exp_avg, m);
    copy(p.exp_avg_sq, v);
    if (master) copy(p.master, w);
    covered.emplace_back(lo, hi);
  }
  std::sort(covered.begin(), covered.end());
  int64_t reach = shard_begin_;
  for (const auto& [lo, hi] : covered) {
    if (lo > reach) break;
    reach = std::max(reach, hi);
  }
  if (reach < shard_end_) {
    return absl::DataLossError(absl::StrCat("optimizer state: no piece covers elements [", reach, ", ",
                                            shard_end_, ") of the flat state (", flat_size_, " elements)"));
  }
  // Split the flat shard into AdamW's per-slot tensors.
  NamedTensors named;
  int64_t at = 0;
  for (const auto& [name, t] : adam_->NamedState()) {
    if (name == AdamW::kStepName) continue;
    const bool is_sq = name.size() > 11 && name.compare(name.size() - 11, 11, ".exp_avg_sq") == 0;
    const bool is_m = !is_sq && name.size() > 8 && name.compare(name.size() - 8, 8, ".exp_avg") == 0;
    const Tensor& src = is_sq ? v : is_m ? m : w;
    named.emplace_back(name, src.Rows(at, t.numel()).Reshape(t.shape()));
    if ((master && !is_m && !is_sq) || (!master && is_sq)) at += t.numel();
  }
  const double s = static_cast<double>(step);
  named.emplace_back(AdamW::kStepName, Tensor::FromHost(&s, {}, DType::kF64, GetBackend(DeviceType::kCpu).value()));
  return adam_->LoadState(named);
}

}  // namespace pmol::dist

// AdamW over data-parallel ranks with ZeRO stages 0, 1 and 2 (Rajbhandari et al. 2020),
// written against Comm. The trainable tensors are replicated on every rank of `comm`;
// they are seen as one flat vector (the tensors concatenated in registration order) of
// Ψ elements, split into one contiguous shard per rank (EvenBlocks: uneven sizes are fine,
// a shard may be empty) and into buckets of about `bucket_bytes` for the collectives.
// Every rank's micro-batch gradients arrive already scaled so that their sum over ranks
// and micro-batches is the step's gradient.
//
//   stage 0  gradients all-reduced (bucket by bucket); every rank keeps the whole AdamW
//            state and updates every parameter.                  per step: AR(Ψ)
//   stage 1  gradients reduce-scattered once per step into this rank's shard; AdamW
//            state only for the shard; the updated shards all-gathered.  RS(Ψ) + AG(Ψ)
//   stage 2  as 1, but the reduce-scatter runs after every micro-batch and the
//            accumulated gradient lives only in the shard (the model's gradient buffers
//            hold one micro-batch and are zeroed).       per step: A x RS(Ψ) + AG(Ψ)
// With N ranks, the ring volumes sent per rank are AR = 2(N-1)/N Ψ b_g, RS = (N-1)/N Ψ
// b_g and AG = (N-1)/N Ψ b_p (b_g, b_p: bytes per gradient / parameter element);
// dist/comm.h counts them. One rank (N = 1) moves nothing and gives the updates of
// pmol/optim/adamw.h exactly.
//
// Overlap with the backward (as DDP's bucketed all-reduce): in the micro-batch whose
// gradients are reduced (stage 2: every one; stages 0 and 1: the step's last, as said by
// BeginMicroBatch), the caller reports each tensor whose gradient has become final with
// GradientReady. Buckets start from the last one (the backward finalises the tensors of
// the top layers first) and strictly in that order, so that every rank starts the same
// collectives in the same order whatever it reported: a bucket starts once it and every
// bucket after it are final, and AfterMicroBatch starts whatever is left. Up to two
// buckets are in flight while the backward goes on (each with its own buffers); each
// report also tests the in-flight ones, which is what moves MPI's data on CPU. The
// results are those of reducing after the backward, bucket by bucket.
//
// Gradient clipping uses the global norm: the sum of squares of each rank's shard
// (stage 0: of the whole reduced gradient), all-reduced. Element updates are those of
// AdamW (pmol/optim/adamw.h), so a run differs from the one-rank run only by the order
// in which the reductions add the ranks' gradients.
//
// Checkpoints: the state of this rank's shard, flat (exp_avg, exp_avg_sq and, for
// bf16/f16 parameters, master), with its range [shard_begin, shard_end) of the flat
// vector; LoadState takes pieces written by any number of ranks (any stage) and copies
// the overlap with this rank's shard, so a run resumes with another data-parallel size.
#ifndef DIST_ZERO_OPTIMIZER_H_
#define DIST_ZERO_OPTIMIZER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dist/comm.h"
#include "pmol/core/tensor.h"
#include "pmol/optim/adamw.h"

namespace pmol::dist {

struct ZeroOptions {
  int stage = 0;                        // 0, 1 or 2
  int64_t bucket_bytes = 25ll << 20;    // > 0
};

// A piece of the flat optimizer state, [begin, end), as one rank wrote it.
struct StatePiece {
  int64_t begin = 0, end = 0;
  Tensor exp_avg, exp_avg_sq, master;  // 1-D, end - begin elements; master may be undefined
};

class ZeroOptimizer {
 public:
  // `params` and `grads`: the trainable tensors and their gradient buffers, in the same
  // order with the same shapes, all parameters of one floating dtype and all gradients
  // of one (F32 or F64). decay[i]: whether weight decay applies to params[i]. Errors
  // name the tensor or option.
  static absl::StatusOr<std::unique_ptr<ZeroOptimizer>> Create(Comm* comm, const NamedTensors& params,
                                                               const NamedTensors& grads,
                                                               const std::vector<bool>& decay,
                                                               const AdamWOptions& adam,
                                                               const ZeroOptions& options);

  // Before the first micro-batch of a step (stage 2: zeroes the shard's gradient).
  void BeginStep();
  // Before each micro-batch's backward; `last`: the step's last micro-batch (stages 0 and
  // 1 reduce during its backward). Optional: without it nothing overlaps the backward.
  void BeginMicroBatch(bool last);
  // The gradient of tensor i (registration order) is final for this micro-batch: starts
  // the buckets that this completes (see the file comment). Nothing in a micro-batch that
  // is not reduced.
  void GradientReady(size_t i);
  // After each micro-batch's backward, on every rank even when its backward failed (so
  // that the ranks' collectives still match): starts the buckets not started yet and
  // waits for all. Stage 2: accumulates the reduce-scattered gradient into the shard and
  // zeroes the gradient buffers; stages 0 and 1: after the last micro-batch, the
  // gradient is reduced.
  void AfterMicroBatch();
  // After the last micro-batch: reduces what is left to reduce and returns the global
  // gradient norm before clipping; scales the gradient to max_norm when above it
  // (max_norm <= 0: no clipping). A non-finite norm leaves the gradient as it is (the
  // caller skips the step; every rank sees the same norm).
  double ReduceAndClip(double max_norm);
  // The two halves of ReduceAndClip, for a norm over several optimizers (expert
  // parallelism): the sum of squares of the reduced gradient (the same on every rank of
  // the comm), and the scaling given the global norm.
  double ReduceGradients();
  void ClipToNorm(double norm, double max_norm);
  // One AdamW update of this rank's shard with learning rate lr, then (stages 1 and 2)
  // the all-gather that brings every rank's parameters up to date.
  void Step(double lr);

  int stage() const { return options_.stage; }
  int64_t step() const { return adam_->step(); }
  int64_t flat_size() const { return flat_size_; }
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }
  // Whether this rank's state goes into a checkpoint: every rank for stages 1 and 2;
  // rank 0 only for stage 0 (its "shard" is the whole replicated state).
  bool writes_state() const { return options_.stage > 0 || comm_->rank() == 0; }
  // "name:numel,..." of the flat layout, so that a checkpoint's pieces are only read
  // into the same tensors.
  const std::string& layout_signature() const { return signature_; }

  // The flat state of this rank's shard (live tensors, 1-D): exp_avg, exp_avg_sq and
  // master (bf16/f16 parameters; undefined otherwise).
  StatePiece ShardState() const;
  // Restores this rank's shard from pieces that together cover it (others are ignored)
  // and sets the step count. Nothing changes on error.
  absl::Status LoadState(const std::vector<StatePiece>& pieces, int64_t step);

 private:
  ZeroOptimizer() = default;
  // Pieces of the tensors in the flat range [begin, end): (tensor, offset in it, count).
  struct Segment {
    size_t tensor;
    int64_t offset, count;
  };
  std::vector<Segment> Segments(int64_t begin, int64_t end) const;
  // Copies flat range [begin, end) of `tensors` into / out of `buffer` (1-D, contiguous).
  void Pack(const std::vector<Tensor>& tensors, int64_t begin, int64_t end, void* buffer) const;
  void Unpack(const void* buffer, int64_t begin, int64_t end, std::vector<Tensor>& tensors) const;
  std::vector<int64_t> ShardCounts(int64_t begin, int64_t end) const;
  int64_t num_buckets() const { return (flat_size_ + bucket_elements_ - 1) / bucket_elements_; }
  // Gradient reduction, bucket by bucket: StartBuckets starts bucket next_bucket_ and
  // those below it while `all` or they are final; FinishBuckets starts the rest and
  // completes every one in flight.
  void Arm();  // this micro-batch's gradients are to be reduced
  void StartBuckets(bool all);
  void StartBucket(int64_t bucket);
  void CompleteOldest();  // waits for the oldest bucket in flight and uses its result
  void FinishBuckets();
  void AllGatherParams();

  Comm* comm_ = nullptr;
  ZeroOptions options_;
  Backend* backend_ = nullptr;
  DType param_dtype_ = DType::kF32, grad_dtype_ = DType::kF32;
  std::vector<Tensor> params_, grads_;  // 1-D views
  std::vector<int64_t> offsets_;        // flat offset of each tensor; offsets_.back() = Ψ
  int64_t flat_size_ = 0, shard_begin_ = 0, shard_end_ = 0;
  std::vector<int64_t> shard_starts_;   // size N + 1
  int64_t bucket_elements_ = 1;
  Tensor shard_grad_;                   // stages 1, 2: the reduced gradient of the shard
  // Gradient reduction in flight: kSlots buffer pairs (gradient dtype), used in turn.
  static constexpr int kSlots = 2;
  struct InFlight {
    int64_t bucket;
    int slot;
    std::unique_ptr<PendingCollective> request;
  };
  Tensor send_[kSlots], recv_[kSlots];
  std::vector<InFlight> in_flight_;     // oldest first
  int64_t buckets_started_ = 0;         // in this micro-batch (picks the slot)
  int64_t next_bucket_ = -1;            // the next bucket to start (counting down); -1: none
  bool reducing_ = false;               // this micro-batch's gradients are being reduced
  bool reduced_ = false;                // stages 0, 1: the step's gradient is reduced
  std::vector<char> final_;             // per tensor: final in this micro-batch
  std::vector<std::pair<size_t, size_t>> bucket_tensors_;  // per bucket: [first, last] tensor
  Tensor param_bucket_, param_send_;    // scratch (parameter dtype) for the all-gather
  std::unique_ptr<AdamW> adam_;
  std::string signature_;
};

}  // namespace pmol::dist

#endif  // DIST_ZERO_OPTIMIZER_H_

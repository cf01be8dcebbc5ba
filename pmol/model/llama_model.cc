// Llama-family decoder forward/backward over all blocks; see llama_model.h.
#include "pmol/model/llama_model.h"

#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "pmol/core/status.h"
#include "pmol/io/weight_files.h"

namespace pmol {

LlamaModel::LlamaModel(LlamaConfig config, LlamaWeights weights, Backend* backend, DType dtype)
    : config_(std::move(config)), weights_(std::move(weights)), backend_(backend), dtype_(dtype) {}

absl::StatusOr<LlamaModel> LlamaModel::Load(const std::string& dir, Backend* backend, DType dtype) {
  PMOL_ASSIGN_OR_RETURN(LlamaConfig config, ReadHfConfig(dir + "/config.json"));
  PMOL_ASSIGN_OR_RETURN(WeightFiles files, WeightFiles::Open(dir));
  PMOL_ASSIGN_OR_RETURN(LlamaWeights weights, LoadLlamaWeights(config, files, backend, dtype));
  return LlamaModel(std::move(config), std::move(weights), backend, dtype);
}

namespace {

absl::Status CheckTokenLayout(const TokenLayout& layout, int64_t batch, int64_t seq) {
  const int64_t n = batch * seq;
  if (static_cast<int64_t>(layout.positions.size()) != n ||
      static_cast<int64_t>(layout.key_holes.size()) != 2 * n)
    return absl::InvalidArgumentError(absl::StrCat(
        "token layout: expected ", n, " positions and ", 2 * n, " key-hole bounds, got ",
        layout.positions.size(), " and ", layout.key_holes.size()));
  for (int64_t i = 0; i < n; ++i) {
    if (layout.positions[i] < 0 || layout.positions[i] >= seq)
      return absl::InvalidArgumentError(absl::StrCat(
          "token layout: row ", i / seq, ", token ", i % seq, " has position ",
          layout.positions[i], ", outside [0, ", seq, ")"));
  }
  return absl::OkStatus();
}

}  // namespace

BlockInput LlamaModel::MakeBlockInput(const ForwardState& s, int64_t layer) {
  BlockInput in;
  in.adapters = s.adapters;
  in.layer = layer;
  in.batch = s.batch;
  in.seq = s.seq;
  in.positions = &s.positions;
  in.key_holes = s.key_holes.defined() ? &s.key_holes : nullptr;
  in.rope = &rope_;
  return in;
}

absl::StatusOr<Tensor> LlamaModel::Forward(const std::vector<int32_t>& ids, int64_t batch,
                                           int64_t seq, ForwardState* state,
                                           LinearAdapters* adapters) {
  PMOL_ASSIGN_OR_RETURN(Tensor hidden, ForwardHidden(ids, batch, seq, state, adapters));
  const int64_t n = batch * seq, h = config_.hidden_size, v = config_.vocab_size;
  Tensor logits = Tensor::Empty({batch, seq, v}, dtype_, backend_);
  backend_->Gemm(dtype_, false, true, n, v, h, 1.0, hidden.data(), h, Head().data(), h, 0.0,
                 logits.data(), v);
  return logits;
}

absl::StatusOr<Tensor> LlamaModel::ForwardHidden(const std::vector<int32_t>& ids, int64_t batch,
                                                 int64_t seq, ForwardState* state,
                                                 LinearAdapters* adapters,
                                                 const TokenLayout* layout) {
  if (batch <= 0 || seq <= 0 || static_cast<int64_t>(ids.size()) != batch * seq)
    return absl::InvalidArgumentError(absl::StrCat("token ids: expected ", batch, " x ", seq,
                                                   " ids, got ", ids.size()));
  for (int64_t i = 0; i < batch * seq; ++i) {
    if (ids[i] < 0 || ids[i] >= config_.vocab_size)
      return absl::InvalidArgumentError(absl::StrCat(
          "token ids: row ", i / seq, ", position ", i % seq, " holds id ", ids[i],
          ", outside the vocabulary [0, ", config_.vocab_size, ")"));
  }
  if (config_.sliding_window > 0 && seq > config_.sliding_window)
    return absl::UnimplementedError(absl::StrCat(
        "sequence length ", seq, " exceeds the model's sliding_window (", config_.sliding_window,
        "); sliding-window attention is not implemented"));
  if (layout != nullptr) PMOL_RETURN_IF_ERROR(CheckTokenLayout(*layout, batch, seq));
  if (rope_.positions < seq) rope_ = MakeRopeTable(config_, std::max<int64_t>(seq, 256), backend_, AccumDType(dtype_));

  ForwardState local;
  ForwardState& s = state ? *state : local;
  s = ForwardState();
  s.adapters = adapters;
  s.batch = batch;
  s.seq = seq;
  const int64_t n = batch * seq, h = config_.hidden_size;
  s.ids = Tensor::FromHost(ids.data(), {n}, DType::kI32, backend_);
  if (layout != nullptr) {
    s.positions = Tensor::FromHost(layout->positions.data(), {n}, DType::kI32, backend_);
    s.key_holes = Tensor::FromHost(layout->key_holes.data(), {n, 2}, DType::kI32, backend_);
  } else {
    std::vector<int32_t> pos(n);
    for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i % seq);
    s.positions = Tensor::FromHost(pos.data(), {n}, DType::kI32, backend_);
  }

  Tensor x = Tensor::Empty({n, h}, dtype_, backend_);
  backend_->EmbeddingForward(dtype_, weights_.embed.data(), s.ids.data_as<int32_t>(), n, h, x.data());
  s.blocks.resize(config_.num_hidden_layers);
  // Each block's output y = x + skip is summed by the next norm's pass (decoder_block.h);
  // skip is undefined for the embeddings.
  Tensor skip;
  for (int64_t l = 0; l < config_.num_hidden_layers; ++l) {
    BlockActivations& acts = s.blocks[l];
    acts.x = x;
    Tensor next_skip;
    x = DecoderBlockForward(config_, weights_.layers[l], MakeBlockInput(s, l), &acts,
                            skip.defined() ? &skip : nullptr, &next_skip);
    skip = std::move(next_skip);
    if (state == nullptr) {
      acts = BlockActivations();
    } else if (recompute_) {
      acts.ReleaseAllButInput();
    }
  }
  s.final_in = x;
  s.final_inv_rms = Tensor::Empty({n}, AccumDType(dtype_), backend_);
  s.final_out = Tensor::Empty({n, h}, dtype_, backend_);
  backend_->RmsNormForward(dtype_, x.data(), skip.defined() ? skip.data() : nullptr,
                           weights_.final_norm.data(), config_.rms_norm_eps, n, h,
                           skip.defined() ? x.data() : nullptr, s.final_out.data(),
                           s.final_inv_rms.data());  // final_in = x += skip
  return s.final_out;
}

Tensor LlamaModel::Backward(ForwardState& s, const Tensor& dlogits, LlamaWeights* grads,
                            const GradientsFinal& on_final) {
  const int64_t n = s.batch * s.seq, h = config_.hidden_size, v = config_.vocab_size;
  PMOL_CHECK(dlogits.numel() == n * v && dlogits.dtype() == dtype_);
  // Head: logits = f W^T.
  Tensor df = Tensor::Empty({n, h}, dtype_, backend_);
  backend_->Gemm(dtype_, false, false, n, h, v, 1.0, dlogits.data(), v, Head().data(), h, 0.0,
                 df.data(), h);
  if (grads != nullptr) {
    Tensor& dhead = config_.tie_word_embeddings ? grads->embed : grads->lm_head;
    backend_->GemmTo(dtype_, dhead.dtype(), true, false, v, h, n, 1.0, dlogits.data(), v,
                     s.final_out.data(), h, 1.0, dhead.data(), h);
  }
  return BackwardFromHidden(s, df, grads, on_final);
}

Tensor LlamaModel::HeadAt(const Tensor& hidden, const Tensor& positions) const {
  const int64_t m = positions.numel(), h = config_.hidden_size, v = config_.vocab_size;
  PMOL_CHECK(positions.dtype() == DType::kI32 && hidden.dim(-1) == h && hidden.dtype() == dtype_);
  Tensor selected = Tensor::Empty({m, h}, dtype_, backend_);
  backend_->EmbeddingForward(dtype_, hidden.data(), positions.data_as<int32_t>(), m, h, selected.data());
  Tensor logits = Tensor::Empty({m, v}, AccumDType(dtype_), backend_);
  backend_->GemmTo(dtype_, AccumDType(dtype_), false, true, m, v, h, 1.0, selected.data(), h,
                   Head().data(), h, 0.0, logits.data(), v);
  return logits;
}

Tensor LlamaModel::HeadAtBackward(const Tensor& hidden, const Tensor& positions, const Tensor& dlogits,
                                  LlamaWeights* grads) const {
  const int64_t m = positions.numel(), n = hidden.numel() / config_.hidden_size;
  const int64_t h = config_.hidden_size, v = config_.vocab_size;
  PMOL_CHECK(dlogits.numel() == m * v && dlogits.dtype() == AccumDType(dtype_));
  const Tensor d = dtype_ == dlogits.dtype() ? dlogits : dlogits.ConvertTo(dtype_);
  Tensor dselected = Tensor::Empty({m, h}, dtype_, backend_);
  backend_->Gemm(dtype_, false, false, m, h, v, 1.0, d.data(), v, Head().data(), h, 0.0,
                 dselected.data(), h);
  if (grads != nullptr) {
    Tensor selected = Tensor::Empty({m, h}, dtype_, backend_);
    backend_->EmbeddingForward(dtype_, hidden.data(), positions.data_as<int32_t>(), m, h, selected.data());
    Tensor& dhead = config_.tie_word_embeddings ? grads->embed : grads->lm_head;
    backend_->GemmTo(dtype_, dhead.dtype(), true, false, v, h, m, 1.0, d.data(), v,
                     selected.data(), h, 1.0, dhead.data(), h);
  }
  Tensor dhidden = Tensor::Zeros({n, h}, dtype_, backend_);
  backend_->EmbeddingBackward(dtype_, dtype_, dselected.data(), positions.data_as<int32_t>(), m, h,
                              dhidden.data());
  return dhidden;
}

Tensor LlamaModel::BackwardFromHidden(ForwardState& s, const Tensor& df, LlamaWeights* grads,
                                      const GradientsFinal& on_final) {
  const int64_t n = s.batch * s.seq, h = config_.hidden_size;
  PMOL_CHECK(df.numel() == n * h && df.dtype() == dtype_);
  Tensor dx = Tensor::Empty({n, h}, dtype_, backend_);
  backend_->RmsNormBackward(dtype_, s.final_in.data(), weights_.final_norm.data(),
                            s.final_inv_rms.data(), df.data(), nullptr, n, h, dx.data(),
                            grads ? grads->final_norm.data() : nullptr);
  if (on_final) on_final(config_.num_hidden_layers);
  for (int64_t l = config_.num_hidden_layers - 1; l >= 0; --l) {
    BlockActivations& acts = s.blocks[l];
    const BlockInput in = MakeBlockInput(s, l);
    if (recompute_) {  // acts.x is the block input (summed in the forward); y is not needed
      Tensor unused_skip;
      DecoderBlockForward(config_, weights_.layers[l], in, &acts, nullptr, &unused_skip);
    }
    dx = DecoderBlockBackward(config_, weights_.layers[l], in, acts, dx,
                              grads ? &grads->layers[l] : nullptr);
    acts = BlockActivations();  // free as we go
    if (on_final) on_final(l);
  }
  if (grads != nullptr) {
    backend_->EmbeddingBackward(dtype_, grads->embed.dtype(), dx.data(), s.ids.data_as<int32_t>(), n,
                                h, grads->embed.data());
  }
  if (on_final) on_final(-1);
  return dx;
}

int64_t GradientsFinalLayer(const std::string& name, int64_t num_layers) {
  if (name == "model.embed_tokens.weight") return -1;
  const std::string prefix = "model.layers.";
  const size_t at = name.find(prefix);
  if (at == std::string::npos || (at > 0 && name[at - 1] != '.')) return num_layers;
  const size_t begin = at + prefix.size(), end = name.find('.', begin);
  int64_t layer = -1;
  if (end == std::string::npos || !absl::SimpleAtoi(name.substr(begin, end - begin), &layer) || layer < 0 ||
      layer >= num_layers) {
    return num_layers;
  }
  return layer;
}

}  // namespace pmol

// Adapters of a whole model: construction, init, loading, the LinearAdapters hook; see
// pmol_adapters.h.
#include "pmol/adapters/pmol_adapters.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "pmol/adapters/expert_slices.h"
#include "pmol/core/rng.h"
#include "pmol/core/status.h"
#include "pmol/io/safetensors.h"

namespace pmol {
namespace {

// (d_in, d_out) of a module.
std::pair<int64_t, int64_t> ModuleDims(const LlamaConfig& c, LinearModule m) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  switch (m) {
    case LinearModule::kQ: return {H, c.q_dim()};
    case LinearModule::kK:
    case LinearModule::kV: return {H, c.kv_dim()};
    case LinearModule::kO: return {c.q_dim(), H};
    case LinearModule::kGate:
    case LinearModule::kUp: return {H, I};
    case LinearModule::kDown: return {I, H};
  }
  return {0, 0};
}

Tensor HostTensor(const std::vector<double>& v, const Shape& shape, Backend* be, DType dt) {
  return Tensor::FromHost(v.data(), shape, DType::kF64, be).ConvertTo(dt);
}

}  // namespace

PmolAdapters::PmolAdapters(const AdapterOptions& options, const LlamaConfig& model,
                           Backend* backend, DType dtype)
    : options_(options), backend_(backend), dtype_(dtype) {
  PMOL_CHECK(options.kind != AdapterKind::kFull);
  const int64_t layers = model.num_hidden_layers;
  std::vector<bool> adapted_layer(layers, options.layers.empty());
  for (int64_t l : options.layers) adapted_layer[l] = true;
  index_.assign(layers * kNumLinearModules, -1);
  const ExpertLayout& lay = options.layout;
  const int64_t er = static_cast<int64_t>(lay.num_experts()) * lay.rank;
  for (int64_t l = 0; l < layers; ++l) {
    if (!adapted_layer[l]) continue;
    for (int mi = 0; mi < kNumLinearModules; ++mi) {
      if (!options.targets[mi]) continue;
      AdaptedModule am;
      am.layer = l;
      am.module = static_cast<LinearModule>(mi);
      am.name = LinearModuleName(l, am.module);
      auto [d_in, d_out] = ModuleDims(model, am.module);
      am.spec.d_in = d_in;
      am.spec.d_out = d_out;
      am.spec.layout = lay;
      am.spec.has_router = options.has_router();
      am.spec.scaling = options.scaling();
      am.spec.temperature = options.temperature;
      am.spec.top_k = options.top_k;
      am.spec.capacity_factor = options.capacity_factor;
      am.spec.dropout_scale = options.dropout > 0 ? 1.0 / (1.0 - options.dropout) : 1.0;
      am.params.lora_A = Tensor::Zeros({er, d_in}, dtype, backend);
      am.params.lora_B = Tensor::Zeros({d_out, er}, dtype, backend);
      am.grads.lora_A = Tensor::Zeros({er, d_in}, AccumDType(dtype), backend);
      am.grads.lora_B = Tensor::Zeros({d_out, er}, AccumDType(dtype), backend);
      if (am.spec.has_router) {
        am.params.router = Tensor::Zeros({lay.num_slots(), d_in}, dtype, backend);
        am.grads.router = Tensor::Zeros({lay.num_slots(), d_in}, AccumDType(dtype), backend);
      }
      index_[l * kNumLinearModules + mi] = static_cast<int32_t>(modules_.size());
      modules_.push_back(std::move(am));
    }
  }
}

void PmolAdapters::Initialize(uint64_t seed) {
  for (AdaptedModule& am : modules_) {
    const std::string a_name = am.name + ".pmol.lora_A";
    Rng rng = Rng::ForStream(seed, a_name);
    std::vector<double> a(am.params.lora_A.numel());
    if (options_.lora_init == LoraInit::kKaimingUniform) {
      // kaiming_uniform_(a=sqrt(5)) on [out, in]: bound = sqrt(6 / ((1 + 5) in)).
      const double bound = 1.0 / std::sqrt(static_cast<double>(am.spec.d_in));
      for (double& v : a) v = bound * (2.0 * rng.Uniform() - 1.0);
    } else {
      for (double& v : a) v = rng.Normal() / options_.layout.rank;
    }
    am.params.lora_A = HostTensor(a, am.params.lora_A.shape(), backend_, dtype_);
    am.params.lora_B.SetZero();
    if (am.spec.has_router) {
      Rng rr = Rng::ForStream(seed, am.name + ".pmol.router");
      std::vector<double> w(am.params.router.numel());
      for (double& v : w) v = options_.router_init_std * rr.Normal();
      am.params.router = HostTensor(w, am.params.router.shape(), backend_, dtype_);
    }
  }
}

NamedTensors PmolAdapters::Named(bool grads) {
  NamedTensors out;
  for (AdaptedModule& am : modules_) {
    PmolLinearParams& p = grads ? am.grads : am.params;
    out.push_back({am.name + ".pmol.lora_A", p.lora_A});
    out.push_back({am.name + ".pmol.lora_B", p.lora_B});
    if (am.spec.has_router) out.push_back({am.name + ".pmol.router", p.router});
  }
  return out;
}

bool PmolAdapters::IsRouter(const std::string& name) {
  return absl::EndsWith(name, ".pmol.router");
}

absl::Status PmolAdapters::Load(const std::string& path,
                                const std::set<std::string>& read_by_caller) {
  PMOL_ASSIGN_OR_RETURN(std::shared_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  std::set<std::string> expected;
  for (auto& [name, tensor] : Params()) {
    expected.insert(name);
    const SafetensorsEntry* e = file->Find(name);
    if (e == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": adapter tensor '", name, "' is missing (the run config's adapter section asks for it)"));
    if (e->shape != tensor.shape())
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": adapter tensor '", name, "' has shape ", ShapeString(e->shape),
          " but the run config implies ", ShapeString(tensor.shape())));
  }
  for (const SafetensorsEntry& e : file->entries()) {
    if (!expected.count(e.name) && !read_by_caller.count(e.name))
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", e.name, "' is not an adapter tensor of this run config ",
          "(check adapter.kind, groups, targets and layers)"));
  }
  for (AdaptedModule& am : modules_) {
    auto load = [&](const std::string& suffix, Tensor& dst) -> absl::Status {
      PMOL_ASSIGN_OR_RETURN(Tensor t, file->Load(am.name + suffix, backend_, dtype_));
      dst = t.Clone();  // owned and writable, not a view of the mapped file
      return absl::OkStatus();
    };
    PMOL_RETURN_IF_ERROR(load(".pmol.lora_A", am.params.lora_A));
    PMOL_RETURN_IF_ERROR(load(".pmol.lora_B", am.params.lora_B));
    if (am.spec.has_router) PMOL_RETURN_IF_ERROR(load(".pmol.router", am.params.router));
  }
  return absl::OkStatus();
}

void PmolAdapters::DistributeExperts(ExpertParallelGroup group) {
  PMOL_CHECK(options_.has_router() && group.comm != nullptr &&
             static_cast<int>(group.experts_of_rank.size()) == group.comm->size());
  ep_ = std::move(group);
  const std::vector<int32_t>& local = ep_.local_experts();
  const int64_t r = options_.layout.rank;
  for (AdaptedModule& am : modules_) {
    am.params.lora_A = SliceExpertRows(am.params.lora_A, local, r);
    am.params.lora_B = SliceExpertColumns(am.params.lora_B, local, r);
    am.grads.lora_A = Tensor::Zeros(am.params.lora_A.shape(), AccumDType(dtype_), backend_);
    am.grads.lora_B = Tensor::Zeros(am.params.lora_B.shape(), AccumDType(dtype_), backend_);
  }
}

NamedTensors PmolAdapters::FullParams() {
  if (!expert_parallel()) return Params();
  dist::Comm& comm = *ep_.comm;
  const int64_t r = options_.layout.rank, experts = options_.layout.num_experts();
  NamedTensors out;
  for (AdaptedModule& am : modules_) {
    const int64_t d_in = am.spec.d_in, d_out = am.spec.d_out;
    // Every rank's A and B, concatenated in rank order.
    std::vector<int64_t> a_counts, b_counts;
    for (const std::vector<int32_t>& theirs : ep_.experts_of_rank) {
      a_counts.push_back(static_cast<int64_t>(theirs.size()) * r * d_in);
      b_counts.push_back(static_cast<int64_t>(theirs.size()) * r * d_out);
    }
    Tensor a_all = Tensor::Empty({experts * r * d_in}, dtype_, backend_);
    Tensor b_all = Tensor::Empty({experts * r * d_out}, dtype_, backend_);
    comm.AllGather(am.params.lora_A.data(), a_all.data(), a_counts, dtype_);
    comm.AllGather(am.params.lora_B.data(), b_all.data(), b_counts, dtype_);
    Tensor a = Tensor::Empty({experts * r, d_in}, dtype_, backend_);
    Tensor b = Tensor::Empty({d_out, experts * r}, dtype_, backend_);
    int64_t a_at = 0, b_at = 0;
    for (size_t q = 0; q < ep_.experts_of_rank.size(); ++q) {
      const std::vector<int32_t>& theirs = ep_.experts_of_rank[q];
      const int64_t width = static_cast<int64_t>(theirs.size()) * r;
      PlaceExpertRows(a_all.Rows(a_at, width * d_in).Reshape({width, d_in}), theirs, r, a);
      PlaceExpertColumns(b_all.Rows(b_at, width * d_out).Reshape({d_out, width}), theirs, r, b);
      a_at += width * d_in;
      b_at += width * d_out;
    }
    out.push_back({am.name + ".pmol.lora_A", a});
    out.push_back({am.name + ".pmol.lora_B", b});
    out.push_back({am.name + ".pmol.router", am.params.router});
  }
  return out;
}

void PmolAdapters::SetFromFullParams(const NamedTensors& full) {
  const std::vector<int32_t>* local = expert_parallel() ? &ep_.local_experts() : nullptr;
  const int64_t r = options_.layout.rank;
  size_t i = 0;
  for (AdaptedModule& am : modules_) {
    PMOL_CHECK(i + 1 < full.size() && full[i].first == am.name + ".pmol.lora_A");
    const Tensor& a = full[i++].second;
    const Tensor& b = full[i++].second;
    am.params.lora_A.CopyFrom(local ? SliceExpertRows(a, *local, r) : a);
    am.params.lora_B.CopyFrom(local ? SliceExpertColumns(b, *local, r) : b);
    if (am.spec.has_router) am.params.router.CopyFrom(full[i++].second);
  }
  PMOL_CHECK(i == full.size());
}

void PmolAdapters::CollectExperts() {
  if (!expert_parallel()) return;
  const NamedTensors full = FullParams();
  size_t i = 0;
  for (AdaptedModule& am : modules_) {
    am.params.lora_A = full[i++].second;
    am.params.lora_B = full[i++].second;
    ++i;  // the router, unchanged
    am.grads.lora_A = Tensor::Zeros(am.params.lora_A.shape(), AccumDType(dtype_), backend_);
    am.grads.lora_B = Tensor::Zeros(am.params.lora_B.shape(), AccumDType(dtype_), backend_);
  }
  ep_ = ExpertParallelGroup();
}

void PmolAdapters::ZeroGrads() {
  for (AdaptedModule& am : modules_) {
    am.grads.lora_A.SetZero();
    am.grads.lora_B.SetZero();
    if (am.spec.has_router) am.grads.router.SetZero();
  }
}

void PmolAdapters::ClearCaches() {
  for (AdaptedModule& am : modules_) {
    am.cache.Clear();
    am.aux_grad = Tensor();
  }
}

void PmolAdapters::SetTraining(bool training, uint64_t seed, int64_t step) {
  training_ = training;
  dropout_seed_ = seed;
  dropout_step_ = step;
}

AdaptedModule* PmolAdapters::Find(int64_t layer, LinearModule m) {
  const int64_t i = layer * kNumLinearModules + static_cast<int>(m);
  if (i < 0 || i >= static_cast<int64_t>(index_.size()) || index_[i] < 0) return nullptr;
  return &modules_[index_[i]];
}

bool PmolAdapters::Adapts(int64_t layer, LinearModule m) const {
  const int64_t i = layer * kNumLinearModules + static_cast<int>(m);
  return i >= 0 && i < static_cast<int64_t>(index_.size()) && index_[i] >= 0;
}

Tensor PmolAdapters::DropoutKeep(const AdaptedModule& am, int64_t rows) const {
  if (!training_ || options_.dropout <= 0.0) return Tensor();
  Rng rng = Rng::ForStream(dropout_seed_ ^ (0x9E3779B97F4A7C15ull * (dropout_step_ + 1)),
                           am.name + ".dropout");
  // A 0/1 mask; the linear applies spec.dropout_scale = 1 / (1 - p) in its own math.
  Tensor keep = Tensor::Empty({rows, am.spec.d_in}, dtype_, backend_);
  backend_->DropoutKeep(dtype_, rng.NextU64(), options_.dropout, keep.numel(), keep.data());
  return keep;
}

void PmolAdapters::Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) {
  AdaptedModule* am = Find(layer, m);
  PMOL_CHECK(am != nullptr);
  if (expert_parallel()) {
    PmolLinearForwardEP(am->spec, ep_, am->params, x, DropoutKeep(*am, x.dim(0)), y, &am->cache);
  } else {
    PmolLinearForward(am->spec, am->params, x, DropoutKeep(*am, x.dim(0)), y, &am->cache);
  }
}

void PmolAdapters::Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                            Tensor& dx) {
  AdaptedModule* am = Find(layer, m);
  PMOL_CHECK(am != nullptr);
  if (expert_parallel()) {
    PmolLinearBackwardEP(am->spec, ep_, am->params, x, am->cache, dy, am->aux_grad, dx, &am->grads);
  } else {
    PmolLinearBackward(am->spec, am->params, x, am->cache, dy, am->aux_grad, dx, &am->grads);
  }
  am->cache.Clear();  // free as the backward goes
}

}  // namespace pmol

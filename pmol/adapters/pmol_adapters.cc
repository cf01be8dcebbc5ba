// Adapters of a whole model: construction, init, loading, the LinearAdapters hook; see
// pmol_adapters.h.
#include "pmol/adapters/pmol_adapters.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
      am.params.lora_A = Tensor::Zeros({er, d_in}, dtype, backend);
      am.params.lora_B = Tensor::Zeros({d_out, er}, dtype, backend);
      am.grads.lora_A = Tensor::Zeros({er, d_in}, dtype, backend);
      am.grads.lora_B = Tensor::Zeros({d_out, er}, dtype, backend);
      if (am.spec.has_router) {
        am.params.router = Tensor::Zeros({lay.num_slots(), d_in}, dtype, backend);
        am.grads.router = Tensor::Zeros({lay.num_slots(), d_in}, dtype, backend);
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
  const double p = options_.dropout, scale = 1.0 / (1.0 - p);
  std::vector<double> keep(rows * am.spec.d_in);
  for (double& k : keep) k = rng.Uniform() < p ? 0.0 : scale;
  return HostTensor(keep, {rows, am.spec.d_in}, backend_, dtype_);
}

void PmolAdapters::Forward(int64_t layer, LinearModule m, const Tensor& x, Tensor& y) {
  AdaptedModule* am = Find(layer, m);
  PMOL_CHECK(am != nullptr);
  PmolLinearForward(am->spec, am->params, x, DropoutKeep(*am, x.dim(0)), y, &am->cache);
}

void PmolAdapters::Backward(int64_t layer, LinearModule m, const Tensor& x, const Tensor& dy,
                            Tensor& dx) {
  AdaptedModule* am = Find(layer, m);
  PMOL_CHECK(am != nullptr);
  PmolLinearBackward(am->spec, am->params, x, am->cache, dy, am->aux_grad, dx, &am->grads);
  am->cache.Clear();  // free as the backward goes
}

}  // namespace pmol

// pmol::AdamW against torch.optim.AdamW (tests/optim/torch_optim_oracle.py), and its
// state handling.
//
// Oracle cases: three parameters (two with weight decay, one without, as torch param
// groups with weight_decay 0), six steps with a different lr each step (as a schedule
// gives), gradients spanning 1e-9 .. 10 in magnitude so eps matters for some elements
// and not others; two hyper-parameter sets. Parameters are compared after every step, m
// and v after the last, element-wise relative to max(|x|, mean|x|).
//   f64: tolerance 1e-12. Both sides run the same formula in the same order; they differ
//     only by FMA contraction (a few ulp, 1 ulp = 1.1e-16 relative) per step, which do
//     not grow over six steps: observed ~1e-16.
//   f32: tolerance 2e-6. Same argument with 1 ulp = 6e-8: each step adds a few roundings
//     (~6 operations, each <= 0.5 ulp, some contracted differently by the two compilers),
//     so after six steps the worst case is ~6 * 6 * 6e-8 = 2e-6; observed far below.
// Why these checks can fail: lr is 1e-2 .. 3e-2 and the parameters are O(1), so the
// update is ~1e-2 relative to the parameter; a missing or wrong bias correction (a factor
// 10 on m_hat at step 1, 1000^(1/2) on v_hat), weight decay applied to the no-decay
// group, or a wrong lr per step change the parameters by >= 1e-4 relative, orders of
// magnitude above either tolerance; m and v are compared directly as well.
#include "pmol/optim/adamw.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "pmol/core/tensor.h"
#include "tests/optim/oracle_util.h"

namespace pmol {
namespace {

using ::pmol::testing::ExpectRelClose;
using ::pmol::testing::RunTorchOracle;

Backend* Cpu() { return GetBackend(DeviceType::kCpu).value(); }

Tensor MakeTensor(const std::vector<double>& v, const Shape& shape, DType dt) {
  return Tensor::FromHost(v.data(), shape, DType::kF64, Cpu()).ConvertTo(dt);
}

std::vector<double> RoundTo(std::vector<double> v, DType dt) {
  if (dt == DType::kF32) {
    for (double& x : v) x = static_cast<float>(x);
  } else if (dt == DType::kBF16) {
    for (double& x : v) x = Bf16ToF32(F64ToBf16(x));
  }
  return v;
}

struct ParamSpec {
  std::string name;
  Shape shape;
  bool decay;
  std::vector<double> init;
  std::vector<std::vector<double>> grads;  // per step
};

struct Case {
  std::string name;
  AdamWOptions options;
  std::vector<double> lrs;
  std::vector<ParamSpec> params;
};

// Seeded values; gradients with magnitudes from 1e-9 to 10.
Case MakeCase(const std::string& name, const AdamWOptions& options, DType dt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> decade(-9, 1);
  Case c{name, options, {1e-2, 2e-2, 1.5e-2, 1e-2, 5e-3, 3e-2}, {}};
  const struct {
    const char* name;
    Shape shape;
    bool decay;
  } layout[] = {{"layers.0.q.lora_A", {7, 5}, true},
                {"layers.0.router", {13}, false},
                {"layers.0.q.lora_B", {3, 4}, true}};
  for (const auto& l : layout) {
    ParamSpec p{l.name, l.shape, l.decay, {}, {}};
    const int64_t n = NumElements(l.shape);
    for (int64_t i = 0; i < n; ++i) p.init.push_back(unit(rng));
    p.init = RoundTo(p.init, dt);
    for (size_t s = 0; s < c.lrs.size(); ++s) {
      std::vector<double> g(n);
      for (double& x : g) x = unit(rng) * std::pow(10.0, decade(rng));
      p.grads.push_back(RoundTo(g, dt));
    }
    c.params.push_back(std::move(p));
  }
  return c;
}

nlohmann::json ToJson(const Case& c, DType dt) {
  nlohmann::json params = nlohmann::json::array();
  for (const ParamSpec& p : c.params) {
    params.push_back({{"name", p.name}, {"shape", p.shape}, {"init", p.init},
                      {"decay", p.decay}, {"grads", p.grads}});
  }
  return {{"name", c.name},
          {"dtype", dt == DType::kF64 ? "float64" : "float32"},
          {"lrs", c.lrs},
          {"beta1", c.options.beta1},
          {"beta2", c.options.beta2},
          {"eps", c.options.eps},
          {"weight_decay", c.options.weight_decay},
          {"params", params}};
}

// Runs pmol's AdamW on the case; calls check(step, name, param) after every step.
template <typename Check>
AdamW RunPmol(const Case& c, DType dt, std::vector<Tensor>* params_out, Check check) {
  AdamW opt(c.options);
  std::vector<Tensor> params, grads;
  for (const ParamSpec& p : c.params) {
    params.push_back(MakeTensor(p.init, p.shape, dt));
    grads.push_back(Tensor::Zeros(p.shape, dt, Cpu()));
    EXPECT_TRUE(opt.AddParam(p.name, params.back(), grads.back(), p.decay).ok());
  }
  for (size_t s = 0; s < c.lrs.size(); ++s) {
    for (size_t i = 0; i < c.params.size(); ++i) {
      grads[i].CopyFrom(MakeTensor(c.params[i].grads[s], c.params[i].shape, dt));
    }
    opt.Step(c.lrs[s]);
    for (size_t i = 0; i < c.params.size(); ++i) check(s, c.params[i].name, params[i]);
  }
  if (params_out != nullptr) *params_out = params;
  return opt;
}

AdamWOptions Options(double beta1, double beta2, double eps, double wd) {
  AdamWOptions o;
  o.beta1 = beta1;
  o.beta2 = beta2;
  o.eps = eps;
  o.weight_decay = wd;
  return o;
}

class AdamWTorchOracleTest : public ::testing::TestWithParam<DType> {};

TEST_P(AdamWTorchOracleTest, MatchesTorchEveryStep) {
  const DType dt = GetParam();
  const double tol = dt == DType::kF64 ? 1e-12 : 2e-6;
  const std::vector<Case> cases = {
      MakeCase("default_betas", Options(0.9, 0.999, 1e-8, 0.1), dt, 11),
      MakeCase("other_betas", Options(0.8, 0.95, 1e-6, 0.3), dt, 12)};
  nlohmann::json job = {{"adamw", nlohmann::json::array()}};
  for (const Case& c : cases) job["adamw"].push_back(ToJson(c, dt));
  const nlohmann::json ref = RunTorchOracle(job, std::string("adamw_") + DTypeName(dt));
  ASSERT_FALSE(ref.is_null());
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    const nlohmann::json& r = ref["adamw"][k];
    double worst = 0;
    AdamW opt = RunPmol(c, dt, nullptr, [&](size_t step, const std::string& name, const Tensor& p) {
      const std::vector<double> want = r["params"][name][step].get<std::vector<double>>();
      worst = std::max(worst, ExpectRelClose(p.ToDoubles(), want, tol,
                                             c.name + " step " + std::to_string(step + 1) +
                                                 " " + name));
    });
    EXPECT_EQ(opt.step(), static_cast<int64_t>(c.lrs.size()));
    for (const auto& [name, t] : opt.NamedState()) {
      if (name == AdamW::kStepName) continue;
      const std::string param = name.substr(0, name.rfind('.'));
      const std::string key = name.substr(name.rfind('.') + 1);
      worst = std::max(worst, ExpectRelClose(t.ToDoubles(),
                                             r[key][param].get<std::vector<double>>(), tol,
                                             c.name + " " + name));
    }
    RecordProperty(c.name + "_worst_relative_error", std::to_string(worst));
    std::cout << "[   INFO   ] " << DTypeName(dt) << " " << c.name
              << ": worst relative error " << worst << " (tolerance " << tol << ")\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AdamWTorchOracleTest,
                         ::testing::Values(DType::kF64, DType::kF32),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

template <typename T>
std::vector<T> Bits(const Tensor& t) {
  std::vector<T> out(t.numel());
  t.CopyToHost(out.data());
  return out;
}

void ExpectSameBits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.nbytes(), b.nbytes()) << what;
  std::vector<char> x(a.nbytes()), y(b.nbytes());
  a.CopyToHost(x.data());
  b.CopyToHost(y.data());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << what << " differs in its bits";
}

TEST(AdamWTest, Bf16ParamsFollowAnF32Master) {
  // The same run with bf16 and with f32 parameters (bf16-representable initial values,
  // identical f32 gradients): the bf16 run's master must be the f32 run's parameters bit
  // for bit, and the bf16 parameter that master rounded to bf16.
  const Case c = MakeCase("bf16", Options(0.9, 0.999, 1e-8, 0.1), DType::kBF16, 13);
  std::vector<Tensor> p32;
  AdamW opt32 = RunPmol(c, DType::kF32, &p32, [](size_t, const std::string&, const Tensor&) {});
  AdamW opt16(c.options);
  std::vector<Tensor> p16, g32;
  for (const ParamSpec& p : c.params) {
    p16.push_back(MakeTensor(p.init, p.shape, DType::kBF16));
    g32.push_back(Tensor::Zeros(p.shape, DType::kF32, Cpu()));
    ASSERT_TRUE(opt16.AddParam(p.name, p16.back(), g32.back(), p.decay).ok());
  }
  for (size_t s = 0; s < c.lrs.size(); ++s) {
    for (size_t i = 0; i < c.params.size(); ++i) {
      g32[i].CopyFrom(MakeTensor(c.params[i].grads[s], c.params[i].shape, DType::kF32));
    }
    opt16.Step(c.lrs[s]);
  }
  const NamedTensors s16 = opt16.NamedState(), s32 = opt32.NamedState();
  ASSERT_EQ(s16.size(), 3 * c.params.size() + 1);
  ASSERT_EQ(s32.size(), 2 * c.params.size() + 1);
  for (size_t i = 0; i < c.params.size(); ++i) {
    const std::string& name = c.params[i].name;
    EXPECT_EQ(s16[3 * i].first, name + ".exp_avg");
    EXPECT_EQ(s16[3 * i + 1].first, name + ".exp_avg_sq");
    EXPECT_EQ(s16[3 * i + 2].first, name + ".master");
    ExpectSameBits(s16[3 * i].second, s32[2 * i].second, name + ".exp_avg");
    ExpectSameBits(s16[3 * i + 1].second, s32[2 * i + 1].second, name + ".exp_avg_sq");
    ExpectSameBits(s16[3 * i + 2].second, p32[i], name + ".master vs f32 parameter");
    ExpectSameBits(p16[i], s16[3 * i + 2].second.ConvertTo(DType::kBF16), name + " (bf16)");
  }
}

// A small optimizer over two f32 parameters with fixed gradients.
struct Rig {
  std::vector<Tensor> params, grads;
  AdamW opt{Options(0.9, 0.999, 1e-8, 0.05)};

  explicit Rig(uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    const Shape shapes[] = {{4, 6}, {5}};
    const char* names[] = {"w", "router"};
    for (int i = 0; i < 2; ++i) {
      std::vector<double> v(NumElements(shapes[i]));
      for (double& x : v) x = unit(rng);
      params.push_back(MakeTensor(v, shapes[i], DType::kF32));
      grads.push_back(Tensor::Zeros(shapes[i], DType::kF32, Cpu()));
      EXPECT_TRUE(opt.AddParam(names[i], params.back(), grads.back(), i == 0).ok());
    }
  }
  void Step(uint32_t seed, double lr) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> unit(-1.0, 1.0);
    for (Tensor& g : grads) {
      std::vector<double> v(g.numel());
      for (double& x : v) x = unit(rng);
      g.CopyFrom(MakeTensor(v, g.shape(), DType::kF32));
    }
    opt.Step(lr);
  }
};

// A deep copy of a state list (as a checkpoint would hold it), converted to `dt`.
NamedTensors Saved(const NamedTensors& state, DType dt = DType::kF32) {
  NamedTensors out;
  for (const auto& [name, t] : state) {
    out.emplace_back(name, name == AdamW::kStepName ? t.Clone() : t.ConvertTo(dt));
  }
  return out;
}

TEST(AdamWTest, NamedStateListsEveryTensorAndTheStep) {
  Rig rig(1);
  rig.Step(2, 1e-2);
  rig.Step(3, 1e-2);
  const NamedTensors state = rig.opt.NamedState();
  std::vector<std::string> names;
  for (const auto& [name, t] : state) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"w.exp_avg", "w.exp_avg_sq", "router.exp_avg",
                                             "router.exp_avg_sq", "step"}));
  EXPECT_EQ(state[0].second.shape(), (Shape{4, 6}));
  EXPECT_EQ(state[3].second.shape(), (Shape{5}));
  EXPECT_EQ(state[0].second.dtype(), DType::kF32);
  EXPECT_EQ(state.back().second.shape(), Shape{});
  EXPECT_EQ(state.back().second.ToDoubles(), std::vector<double>{2.0});
}

TEST(AdamWTest, RestoredStateGivesTheSameNextStepsBitForBit) {
  Rig a(1);
  for (uint32_t s = 0; s < 3; ++s) a.Step(10 + s, 1e-2 * (s + 1));
  const NamedTensors checkpoint = Saved(a.opt.NamedState());
  // A fresh optimizer over copies of the parameters, restored from the checkpoint.
  Rig b(1);
  for (size_t i = 0; i < a.params.size(); ++i) b.params[i].CopyFrom(a.params[i]);
  ASSERT_TRUE(b.opt.LoadState(checkpoint).ok());
  EXPECT_EQ(b.opt.step(), 3);
  for (uint32_t s = 3; s < 5; ++s) {
    a.Step(10 + s, 7e-3);
    b.Step(10 + s, 7e-3);
  }
  EXPECT_EQ(b.opt.step(), 5);
  for (size_t i = 0; i < a.params.size(); ++i) {
    ExpectSameBits(a.params[i], b.params[i], "param " + std::to_string(i));
  }
  const NamedTensors sa = a.opt.NamedState(), sb = b.opt.NamedState();
  for (size_t i = 0; i < sa.size(); ++i) ExpectSameBits(sa[i].second, sb[i].second, sa[i].first);

  // Without the restore (fresh state, step 0) the next step differs: the check bites.
  Rig c(1);
  for (size_t i = 0; i < a.params.size(); ++i) c.params[i].CopyFrom(b.params[i]);
  b.Step(20, 7e-3);
  c.Step(20, 7e-3);
  EXPECT_NE(Bits<float>(b.params[0]), Bits<float>(c.params[0]));
}

TEST(AdamWTest, LoadStateConvertsDtypes) {
  Rig a(1);
  a.Step(2, 1e-2);
  Rig b(1);
  ASSERT_TRUE(b.opt.LoadState(Saved(a.opt.NamedState(), DType::kF64)).ok());
  const NamedTensors sa = a.opt.NamedState(), sb = b.opt.NamedState();
  for (size_t i = 0; i < sa.size(); ++i) ExpectSameBits(sa[i].second, sb[i].second, sa[i].first);
}

TEST(AdamWTest, LoadStateErrorsNameTheTensorAndChangeNothing) {
  Rig rig(1);
  rig.Step(2, 1e-2);
  const NamedTensors good = Saved(rig.opt.NamedState());
  const std::vector<float> before = Bits<float>(rig.opt.NamedState()[0].second);
  auto expect_error = [&](NamedTensors state, absl::StatusCode code,
                          const std::vector<std::string>& words) {
    const absl::Status s = rig.opt.LoadState(state);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), code) << s;
    for (const std::string& w : words) {
      EXPECT_NE(std::string(s.message()).find(w), std::string::npos) << s << " lacks " << w;
    }
    EXPECT_EQ(rig.opt.step(), 1);
    EXPECT_EQ(Bits<float>(rig.opt.NamedState()[0].second), before);
  };
  // Missing tensor (the others are fine and come first, so nothing must be copied).
  NamedTensors missing = good;
  missing.erase(missing.begin() + 3);
  expect_error(missing, absl::StatusCode::kNotFound, {"router.exp_avg_sq", "missing"});
  // Wrong shape.
  NamedTensors shape = good;
  shape[2].second = Tensor::Zeros({6}, DType::kF32, Cpu());
  expect_error(shape, absl::StatusCode::kInvalidArgument, {"router.exp_avg", "[6]", "[5]"});
  // Unknown tensor.
  NamedTensors extra = good;
  extra.emplace_back("decoder.exp_avg", Tensor::Zeros({5}, DType::kF32, Cpu()));
  expect_error(extra, absl::StatusCode::kInvalidArgument, {"decoder.exp_avg", "unexpected"});
  // Duplicate.
  NamedTensors dup = good;
  dup.push_back(good[0]);
  expect_error(dup, absl::StatusCode::kInvalidArgument, {"w.exp_avg", "twice"});
  // Integer tensor.
  NamedTensors ints = good;
  const std::vector<int32_t> zeros(24, 0);
  ints[0].second = Tensor::FromHost(zeros.data(), {4, 6}, DType::kI32, Cpu());
  expect_error(ints, absl::StatusCode::kInvalidArgument, {"w.exp_avg", "I32"});
  // Missing or bad step.
  NamedTensors no_step = good;
  no_step.pop_back();
  expect_error(no_step, absl::StatusCode::kNotFound, {"step", "missing"});
  for (double bad : {-1.0, 2.5, std::nan("")}) {
    NamedTensors s = good;
    s.back().second = Tensor::FromHost(&bad, {}, DType::kF64, Cpu());
    expect_error(s, absl::StatusCode::kInvalidArgument, {"step"});
  }
  // The good state still loads.
  EXPECT_TRUE(rig.opt.LoadState(good).ok());
}

TEST(AdamWTest, AddParamRejectsBadRegistrations) {
  AdamW opt(AdamWOptions{});
  Tensor p = Tensor::Zeros({3, 2}, DType::kF32, Cpu());
  Tensor g = Tensor::Zeros({3, 2}, DType::kF32, Cpu());
  ASSERT_TRUE(opt.AddParam("a", p, g).ok());
  absl::Status s = opt.AddParam("a", p, g);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_NE(std::string(s.message()).find("'a'"), std::string::npos) << s;
  s = opt.AddParam("b", p, Tensor::Zeros({6}, DType::kF32, Cpu()));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("'b'"), std::string::npos) << s;
  s = opt.AddParam("c", p, Tensor::Zeros({3, 2}, DType::kF64, Cpu()));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(std::string(s.message()).find("F64"), std::string::npos) << s;
  s = opt.AddParam("", p, g);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  s = opt.AddParam("d", p, Tensor());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(opt.num_params(), 1);
}

TEST(AdamWTest, NoDecayParamsIgnoreWeightDecay) {
  // Zero gradients: m = v = 0, so the only change is the decay p *= 1 - lr*wd.
  AdamW opt(Options(0.9, 0.999, 1e-8, 0.5));
  const std::vector<double> init = {1.0, -2.0, 0.25};
  Tensor decayed = MakeTensor(init, {3}, DType::kF64);
  Tensor kept = MakeTensor(init, {3}, DType::kF64);
  ASSERT_TRUE(opt.AddParam("w", decayed, Tensor::Zeros({3}, DType::kF64, Cpu()), true).ok());
  ASSERT_TRUE(opt.AddParam("router", kept, Tensor::Zeros({3}, DType::kF64, Cpu()), false).ok());
  opt.Step(0.1);
  EXPECT_EQ(kept.ToDoubles(), init);
  const std::vector<double> want = {0.95, -1.9, 0.2375};
  ExpectRelClose(decayed.ToDoubles(), want, 1e-15, "decayed");
}

TEST(AdamWTest, ValidateOptionsNamesTheField) {
  EXPECT_TRUE(ValidateAdamWOptions(AdamWOptions{}).ok());
  struct Bad {
    AdamWOptions o;
    const char* field;
  };
  std::vector<Bad> bad;
  AdamWOptions o;
  o.beta1 = 1.0;
  bad.push_back({o, "beta1"});
  o = {};
  o.beta2 = -0.1;
  bad.push_back({o, "beta2"});
  o = {};
  o.eps = 0;
  bad.push_back({o, "eps"});
  o = {};
  o.weight_decay = -1;
  bad.push_back({o, "weight_decay"});
  o = {};
  o.lr = std::nan("");
  bad.push_back({o, "lr"});
  for (const Bad& b : bad) {
    const absl::Status s = ValidateAdamWOptions(b.o);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << b.field;
    EXPECT_NE(std::string(s.message()).find(b.field), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace pmol

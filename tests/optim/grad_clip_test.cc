// pmol::GlobalGradNorm / ClipGradNorm against torch.nn.utils.clip_grad_norm_ (through
// tests/optim/torch_optim_oracle.py), on three gradients of 1000, 37 and 40000 elements
// (the last spans several of the CPU reduction's chunks), once clipped (max_norm = 0.3 x
// norm) and once not (max_norm = 10 x norm).
// Tolerances (relative):
//   norm, f64 values or f32 values (torch in float64 on the same values): 1e-13. Both
//     sum ~41000 squares in double; the summation orders differ, error <= ~n u in the
//     worst case but ~sqrt(n) u typically (~2e-14); the sqrt halves it.
//   clipped f64 gradients: 1e-13 (the coefficient inherits the norm's error, then one
//     rounding).
//   clipped f32 gradients vs torch in float32: 2e-6. torch computes the norm and the
//     coefficient in float32 (a norm of per-tensor norms, error ~ few ulp = ~1e-6 at
//     worst), pmol in double; then one f32 rounding each.
// A wrong coefficient (e.g. max_norm / norm without the 1e-6, or scaling when not
// needed) is caught at 1e-13 on f64: max_norm/(norm + 1e-6) differs from max_norm/norm by
// 1e-6/norm ~ 1e-8 relative here.
#include "pmol/optim/grad_clip.h"

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "pmol/core/tensor.h"
#include "tests/optim/oracle_util.h"

namespace pmol {
namespace {

using ::pmol::testing::ExpectRelClose;
using ::pmol::testing::RunTorchOracle;

Backend* Cpu(int threads = 0) { return GetBackend(DeviceType::kCpu, threads).value(); }

Tensor MakeTensor(const std::vector<double>& v, DType dt) {
  return Tensor::FromHost(v.data(), {static_cast<int64_t>(v.size())}, DType::kF64, Cpu())
      .ConvertTo(dt);
}

std::vector<std::vector<double>> RandomGrads(uint32_t seed, bool round_to_f32) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::vector<std::vector<double>> grads;
  for (int64_t n : {1000, 37, 40000}) {
    std::vector<double> g(n);
    for (double& x : g) x = unit(rng);
    if (round_to_f32) {
      for (double& x : g) x = static_cast<float>(x);
    }
    grads.push_back(g);
  }
  return grads;
}

nlohmann::json ClipJob(const std::vector<std::vector<double>>& grads, const char* dtype,
                       double max_norm) {
  nlohmann::json gs = nlohmann::json::array();
  for (const auto& g : grads) {
    gs.push_back({{"shape", {static_cast<int64_t>(g.size())}}, {"values", g}});
  }
  return {{"dtype", dtype}, {"max_norm", max_norm}, {"grads", gs}};
}

TEST(GradClipTest, MatchesTorchClipGradNorm) {
  const auto g64 = RandomGrads(5, false), g32 = RandomGrads(6, true);
  double norm64 = 0, norm32 = 0;  // rough, to pick max_norm
  for (const auto& g : g64) {
    for (double x : g) norm64 += x * x;
  }
  for (const auto& g : g32) {
    for (double x : g) norm32 += x * x;
  }
  norm64 = std::sqrt(norm64);
  norm32 = std::sqrt(norm32);
  struct Case {
    const std::vector<std::vector<double>>* values;
    DType dt;
    double max_norm;
  };
  const std::vector<Case> cases = {{&g64, DType::kF64, 0.3 * norm64},
                                   {&g64, DType::kF64, 10 * norm64},
                                   {&g32, DType::kF32, 0.3 * norm32},
                                   {&g32, DType::kF32, 10 * norm32}};
  nlohmann::json job = {{"clip", nlohmann::json::array()}};
  for (const Case& c : cases) {
    job["clip"].push_back(ClipJob(*c.values, c.dt == DType::kF64 ? "float64" : "float32",
                                  c.max_norm));
    // The float64 norm of the same values, for the f32 cases' norm.
    job["clip"].push_back(ClipJob(*c.values, "float64", c.max_norm));
  }
  const nlohmann::json ref = RunTorchOracle(job, "clip");
  ASSERT_FALSE(ref.is_null());
  for (size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    const std::string what = std::string(DTypeName(c.dt)) + " max_norm " +
                             std::to_string(c.max_norm);
    std::vector<Tensor> grads;
    for (const auto& g : *c.values) grads.push_back(MakeTensor(g, c.dt));
    const double norm = ClipGradNorm(grads, c.max_norm);
    const nlohmann::json& same_dtype = ref["clip"][2 * k];
    const nlohmann::json& in_f64 = ref["clip"][2 * k + 1];
    ExpectRelClose({norm}, {in_f64["norm"].get<double>()}, 1e-13, what + " norm");
    const double grad_tol = c.dt == DType::kF64 ? 1e-13 : 2e-6;
    const bool clipped = c.max_norm < norm;
    for (size_t i = 0; i < grads.size(); ++i) {
      const std::vector<double> want = same_dtype["grads"][i].get<std::vector<double>>();
      ExpectRelClose(grads[i].ToDoubles(), want, grad_tol,
                     what + " grad " + std::to_string(i));
      if (!clipped) {
        EXPECT_EQ(grads[i].ToDoubles(), (*c.values)[i]) << what << " untouched";
      }
    }
  }
}

TEST(GradClipTest, MaxNormZeroIsOffAndReturnsTheNorm) {
  std::vector<Tensor> grads = {MakeTensor({3.0, 4.0}, DType::kF32),
                               MakeTensor({12.0}, DType::kF64)};
  EXPECT_EQ(ClipGradNorm(grads, 0.0), 13.0);
  EXPECT_EQ(grads[0].ToDoubles(), (std::vector<double>{3.0, 4.0}));
  EXPECT_EQ(grads[1].ToDoubles(), (std::vector<double>{12.0}));
  // Clipped: coefficient 6.5 / (13 + 1e-6).
  EXPECT_EQ(ClipGradNorm(grads, 6.5), 13.0);
  const double coef = 6.5 / (13.0 + 1e-6);
  EXPECT_EQ(grads[1].ToDoubles(), (std::vector<double>{12.0 * coef}));
  EXPECT_EQ(grads[0].ToDoubles()[0], static_cast<float>(coef) * 3.0f);
}

TEST(GradClipTest, EmptyAndNonFinite) {
  std::vector<Tensor> none;
  EXPECT_EQ(GlobalGradNorm(none), 0.0);
  EXPECT_EQ(ClipGradNorm(none, 1.0), 0.0);
  std::vector<Tensor> grads = {MakeTensor({1.0, NAN}, DType::kF32), MakeTensor({2.0}, DType::kF32)};
  EXPECT_TRUE(std::isnan(ClipGradNorm(grads, 1.0)));
  EXPECT_EQ(grads[1].ToDoubles(), std::vector<double>{2.0});  // left alone
  std::vector<Tensor> inf = {MakeTensor({INFINITY, 1.0}, DType::kF64)};
  EXPECT_TRUE(std::isinf(ClipGradNorm(inf, 1.0)));
  EXPECT_EQ(inf[0].ToDoubles()[1], 1.0);
}

TEST(GradClipTest, Bf16GradientsGoThroughF32) {
  const auto values = RandomGrads(7, false);
  std::vector<Tensor> g16, g32;
  for (const auto& v : values) {
    g16.push_back(MakeTensor(v, DType::kBF16));
    g32.push_back(g16.back().ConvertTo(DType::kF32));
  }
  EXPECT_EQ(GlobalGradNorm(g16), GlobalGradNorm(g32));
  const double norm = ClipGradNorm(g16, 1.0);
  EXPECT_EQ(norm, ClipGradNorm(g32, 1.0));
  for (size_t i = 0; i < g16.size(); ++i) {
    EXPECT_EQ(g16[i].ToDoubles(), g32[i].ConvertTo(DType::kBF16).ToDoubles()) << i;
  }
}

TEST(GradClipTest, NormIsIndependentOfTheThreadCount) {
  std::mt19937 rng(8);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::vector<double> v(300001);
  for (double& x : v) x = unit(rng);
  double norms[3];
  const int threads[3] = {1, 2, 3};
  for (int k = 0; k < 3; ++k) {
    Cpu(threads[k]);
    norms[k] = GlobalGradNorm({MakeTensor(v, DType::kF32), MakeTensor(v, DType::kF64)});
  }
  Cpu(0);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[1], sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[2], sizeof(double)), 0);
}

}  // namespace
}  // namespace pmol

// The PMoL oracle checks itself (tests/oracles/torch_pmol.py --selftest): f64 gradcheck
// of the total loss for PMoL (dense, top-k 1/2/3), LoRA, full fine-tuning, every DPO
// variant, SFT and reward; and self-consistency: top_k = all slots equals dense, one
// group of one expert equals LoRA, B = 0 gives delta = 0, DPO/group/balance losses by
// hand with scalar loops, the expert loop equals the stacked-GEMM formula, permutation
// invariance of experts and groups, right padding changes no logits. Needs no pmol.
#include "gtest/gtest.h"
#include "tests/grads/grads_test_util.h"

namespace pmol::grads_test {
namespace {

TEST(TorchPmolOracle, SelfTest) {
  ProcessResult r = RunProcess({"/usr/bin/python3", "tests/oracles/torch_pmol.py", "--selftest"});
  EXPECT_TRUE(r.ok()) << r.Describe();
  EXPECT_NE(r.stdout_text.find("0 failures"), std::string::npos) << r.stdout_text;
}

}  // namespace
}  // namespace pmol::grads_test

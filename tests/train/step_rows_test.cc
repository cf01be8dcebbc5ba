// MakeStepRows: the plain and the shared-prompt layouts of a preference batch, written
// out by hand for the tiny pairs (tests/train/train_test_util.h):
//   pair 0: prompt {1,2,3}, chosen {11,12}, rejected {21,22,23}
//   pair 1: prompt {4,5},   chosen {13,14,15}, rejected {24}
// Shared row of pair 0: [1 2 3 | 11 12 | 21 22 23], positions 0..4 then 3..5, the
// rejected rest with key hole [3, 5); of pair 1: [4 5 | 13 14 15 | 24], hole [2, 5).
// Also: a rejected prompt that differs from the chosen one at token 1 (prefix 1: the
// rest of each prompt is not shared), and SFT, which never shares.
#include "pmol/train/step_rows.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/train/train_test_util.h"

namespace pmol {
namespace {

using I = std::vector<int32_t>;
using U = std::vector<uint8_t>;

TEST(StepRowsTest, SharedPromptLayoutOfTwoPairs) {
  const data::PreferenceBatch batch = TinyBatch(0, 2);
  const StepRows r = MakeStepRows(batch, /*with_rejected=*/true, /*share_prompt=*/true);
  ASSERT_TRUE(r.shared);
  EXPECT_EQ(r.count, 2);
  EXPECT_EQ(r.sequences, 4);
  EXPECT_EQ(r.seq, 8);  // pair 0: 5 + 6 - 3; pair 1: 5 + 3 - 2 = 6, padded to 8
  EXPECT_EQ(r.ids, (I{1, 2, 3, 11, 12, 21, 22, 23, /**/ 4, 5, 13, 14, 15, 24, 0, 0}));
  EXPECT_EQ(r.response, (U{0, 0, 0, 1, 1, 1, 1, 1, /**/ 0, 0, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(r.weight, (U{2, 2, 2, 1, 1, 1, 1, 1, /**/ 2, 2, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(r.layout.positions, (I{0, 1, 2, 3, 4, 3, 4, 5, /**/ 0, 1, 2, 3, 4, 2, 0, 0}));
  EXPECT_EQ(r.layout.key_holes, (I{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 3, 5, 3, 5,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 5, 0, 0, 0, 0}));
  EXPECT_EQ(r.preference, (I{0, 1}));
  // Last tokens: chosen 0, chosen 1, rejected 0, rejected 1.
  EXPECT_EQ(r.last, (std::vector<int64_t>{4, 12, 7, 13}));
  // Scored tokens sequence by sequence; a rejected reply's first token is predicted by
  // the prompt's last token, which the chosen reply's first token shares.
  EXPECT_EQ(r.head_sequence, (I{0, 0, 1, 1, 1, 2, 2, 2, 3}));
  EXPECT_EQ(r.head_targets, (I{11, 12, 13, 14, 15, 21, 22, 23, 24}));
  EXPECT_EQ(r.head_rows, (I{2, 3, 9, 10, 11, 2, 5, 6, 9}));
}

TEST(StepRowsTest, PlainLayoutIsOneRowPerSequence) {
  const data::PreferenceBatch batch = TinyBatch(0, 2);
  const StepRows r = MakeStepRows(batch, true, /*share_prompt=*/false);
  EXPECT_FALSE(r.shared);
  EXPECT_EQ(r.count, 4);
  EXPECT_EQ(r.seq, kTinySeqLen);
  const int T = kTinySeqLen;
  EXPECT_EQ(r.ids[0 * T + 3], 11);
  EXPECT_EQ(r.ids[2 * T + 3], 21);  // rejected rows follow the chosen ones
  EXPECT_EQ(r.weight[2 * T + 5], 1);
  EXPECT_EQ(r.weight[2 * T + 6], 0);
  EXPECT_EQ(r.last, (std::vector<int64_t>{4, T + 4, 2 * T + 5, 3 * T + 2}));
  EXPECT_EQ(r.head_sequence, (I{0, 0, 1, 1, 1, 2, 2, 2, 3}));
  EXPECT_EQ(r.head_targets, (I{11, 12, 13, 14, 15, 21, 22, 23, 24}));
  EXPECT_EQ(r.head_rows, (I{2, 3, T + 1, T + 2, T + 3, 2 * T + 2, 2 * T + 3, 2 * T + 4,
                            3 * T + 1}));
  EXPECT_TRUE(r.layout.positions.empty());
}

TEST(StepRowsTest, OnlyTheCommonPartOfThePromptsIsShared) {
  data::PreferenceBatch batch = TinyBatch(0, 1);
  batch.rejected.input_ids[1] = 40;  // rejected prompt {1, 40, 3}
  const StepRows r = MakeStepRows(batch, true, true);
  EXPECT_EQ(r.seq, 10);  // 5 + 6 - 1
  EXPECT_EQ(r.ids, (I{1, 2, 3, 11, 12, 40, 3, 21, 22, 23}));
  EXPECT_EQ(r.weight, (U{2, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  EXPECT_EQ(r.layout.positions, (I{0, 1, 2, 3, 4, 1, 2, 3, 4, 5}));
  for (int n = 5; n < 10; ++n) {
    EXPECT_EQ(r.layout.key_holes[2 * n], 1) << n;
    EXPECT_EQ(r.layout.key_holes[2 * n + 1], 5) << n;
  }
  EXPECT_EQ(r.head_rows, (I{2, 3, 6, 7, 8}));
}

TEST(StepRowsTest, SftNeverShares) {
  const StepRows r = MakeStepRows(TinyBatch(0, 2), /*with_rejected=*/false, true);
  EXPECT_FALSE(r.shared);
  EXPECT_EQ(r.count, 2);
  EXPECT_EQ(r.sequences, 2);
  EXPECT_EQ(r.head_targets, (I{11, 12, 13, 14, 15}));
}

}  // namespace
}  // namespace pmol

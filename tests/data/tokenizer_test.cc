// Unit tests of the tokenizer pieces that need no oracle: UTF-8 handling, the
// byte-level alphabet, BPE merge order, added-token options, decoders, and the error
// messages for bad tokenizer.json files. Oracles: hand-derived expected values (the
// BPE cases are small enough to merge by hand); exact equality everywhere.
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pmol/data/byte_level.h"
#include "pmol/data/bpe_trainer.h"
#include "pmol/data/tokenizer.h"
#include "pmol/data/utf8.h"

namespace pmol::data {
namespace {

TEST(Utf8, ValidationAndLossyDecoding) {
  EXPECT_TRUE(IsValidUtf8("héllo 日本 😀"));
  size_t offset = 0;
  EXPECT_FALSE(IsValidUtf8("ab\xC3", &offset));  // truncated sequence
  EXPECT_EQ(offset, 2u);
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // surrogate U+D800
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  // Maximal subparts: "\xE6\x97" (a truncated 3-byte char) is one U+FFFD; 0xFF is one.
  EXPECT_EQ(Utf8Lossy("a\xE6\x97" "b\xFF"), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
  EXPECT_EQ(Utf8Lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");
}

TEST(ByteLevel, Gpt2Alphabet) {
  EXPECT_EQ(ByteToUnicode(' '), "Ġ");
  EXPECT_EQ(ByteToUnicode('\n'), "Ċ");
  EXPECT_EQ(ByteToUnicode('A'), "A");
  EXPECT_EQ(ByteToUnicode(0xAD), "Ń");  // the soft hyphen is remapped
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string back;
  ASSERT_TRUE(UnicodeToBytes(BytesToUnicode(all), &back));
  EXPECT_EQ(back, all);
  EXPECT_FALSE(UnicodeToBytes("日", &back));
}

// A tiny SentencePiece-style BPE file with byte fallback, written by hand.
nlohmann::json TinySentencePiece() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"▁", 3}, {"a", 4},
                          {"b", 5},     {"▁a", 6},  {"ab", 7},  {"▁ab", 8}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 9 + b;
  }
  return {
      {"added_tokens",
       {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
        {{"id", 1}, {"content", "<s>"}, {"special", true}},
        {{"id", 2}, {"content", "</s>"}, {"special", true}}}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", "▁"}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true},
        {"vocab", vocab},
        // Ranks: "a b" first, then "▁ a", then "▁a b"... "▁ ab" is rank 2.
        {"merges", {"a b", "▁ a", "▁ ab"}}}}};
}

TEST(Tokenizer, SentencePieceBpeMergesByRankAndFallsBackToBytes) {
  auto tok = Tokenizer::FromJson(TinySentencePiece(), nullptr, "tiny");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "ab" -> "▁ab": symbols ▁ a b; rank 0 merges a+b -> ▁ ab; rank 2 -> ▁ab.
  EXPECT_EQ((*tok)->Encode("ab", false), (std::vector<int32_t>{8}));
  // "a a": ▁a ▁a  (rank 1 twice).
  EXPECT_EQ((*tok)->Encode("a a", false), (std::vector<int32_t>{6, 6}));
  // 'é' is not in the vocabulary: its two UTF-8 bytes C3 A9 as byte tokens.
  EXPECT_EQ((*tok)->Encode("é", false), (std::vector<int32_t>{3, 9 + 0xC3, 9 + 0xA9}));
  EXPECT_EQ((*tok)->Encode("ab", true), (std::vector<int32_t>{1, 8}));
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  // Added tokens split the text; the Prepend normalizer applies to each section.
  EXPECT_EQ((*tok)->Encode("a</s>b", false), (std::vector<int32_t>{6, 2, 3, 5}));
  EXPECT_EQ((*tok)->Decode({1, 8, 3, 9 + 0xC3, 9 + 0xA9}, true), "ab é");
  // Invalid byte sequences decode to one U+FFFD per byte (HF ByteFallback).
  EXPECT_EQ((*tok)->Decode({9 + 0xC3}, true), "\xEF\xBF\xBD");
}

TEST(Tokenizer, AddedTokenStripOptions) {
  nlohmann::json j = TinySentencePiece();
  j["added_tokens"].push_back(
      {{"id", 7}, {"content", "<x>"}, {"lstrip", true}, {"rstrip", true}, {"special", false},
       {"normalized", false}});
  auto tok = Tokenizer::FromJson(j, nullptr, "tiny");
  ASSERT_TRUE(tok.ok()) << tok.status();
  // The spaces around <x> are swallowed: sections "a", <x>, "b".
  EXPECT_EQ((*tok)->Encode("a  <x>  b", false), (std::vector<int32_t>{6, 7, 3, 5}));
}

TEST(Tokenizer, ErrorsNameTheFieldAndFile) {
  nlohmann::json j = TinySentencePiece();
  j["model"]["merges"].push_back("a zz");
  auto bad_merge = Tokenizer::FromJson(j, nullptr, "my/tokenizer.json");
  ASSERT_FALSE(bad_merge.ok());
  EXPECT_NE(bad_merge.status().message().find("my/tokenizer.json: model.merges[3]"),
            std::string::npos)
      << bad_merge.status();

  j = TinySentencePiece();
  j["normalizer"] = {{"type", "Precompiled"}};
  auto bad_type = Tokenizer::FromJson(j, nullptr, "t.json");
  ASSERT_FALSE(bad_type.ok());
  EXPECT_NE(bad_type.status().message().find("normalizer.type: normalizer type 'Precompiled'"),
            std::string::npos)
      << bad_type.status();

  j = TinySentencePiece();
  j.erase("model");
  EXPECT_FALSE(Tokenizer::FromJson(j, nullptr, "t.json").ok());

  j = TinySentencePiece();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}},
                        {"behavior", "Isolated"}};
  auto bad_regex = Tokenizer::FromJson(j, nullptr, "t.json");
  ASSERT_FALSE(bad_regex.ok());
  EXPECT_NE(bad_regex.status().message().find("pre_tokenizer.pattern.Regex"), std::string::npos)
      << bad_regex.status();

  auto missing = Tokenizer::Load("/nonexistent/dir");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/dir"), std::string::npos);
}

TEST(Tokenizer, TrainedByteLevelRoundTripsAnyText) {
  BpeTrainerOptions options;
  options.vocab_size = 300;
  options.special_tokens = {"<|endoftext|>"};
  const nlohmann::json j =
      TrainByteLevelBpe({"the cat sat on the mat", "the dog sat on the log"}, options);
  auto tok = Tokenizer::FromJson(j, nullptr, "trained");
  ASSERT_TRUE(tok.ok()) << tok.status();
  for (const std::string text : {"the cat", "日本語 😀\n\t x", "", "a<|endoftext|>b"}) {
    EXPECT_EQ((*tok)->Decode((*tok)->Encode(text, true), false), text);
  }
  // " the" was merged into one token (most frequent words).
  EXPECT_LE((*tok)->Encode(" the", false).size(), 2u);
  // Training stops early on this tiny corpus (min_frequency), so the special token
  // takes the id right after the learned vocabulary: the last id.
  EXPECT_EQ((*tok)->Encode("<|endoftext|>", false),
            (std::vector<int32_t>{(*tok)->vocab_size() - 1}));
  // Invalid UTF-8 input is repaired to U+FFFD before encoding.
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("a\xFF", false), false), "a\xEF\xBF\xBD");
}

}  // namespace
}  // namespace pmol::data

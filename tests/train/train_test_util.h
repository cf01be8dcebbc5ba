// Shared fixtures of the training tests: a tiny random Llama model on disk (f64 compute),
// a PMoL run config for it (2 groups x 2 experts, rank 3), up to six preference pairs,
// nonzero lora_B so that adapters change the outputs, and all trainable gradients as
// one vector.
#ifndef PMOL_TESTS_TRAIN_TRAIN_TEST_UTIL_H_
#define PMOL_TESTS_TRAIN_TRAIN_TEST_UTIL_H_

#include <string>
#include <vector>

#include "pmol/data/batching.h"
#include "pmol/data/preference_dataset.h"
#include "pmol/train/run_components.h"
#include "proto/run_config.pb.h"

namespace pmol {

// hidden 16, 2 layers, vocab 48, written once per test binary.
std::string TinyModelDir();
config::RunConfig TinyConfig();

constexpr int kTinyPairs = 6;
constexpr int kTinySeqLen = 8;  // every tiny pair fits
// Pairs first .. first + count - 1 (< kTinyPairs), pair i labelled i % num_labels,
// source 0, line i + 1.
data::PreferenceDataset TinyDataset(int first, int count, int num_labels = 2);
// Those pairs as one padded batch of `count` rows.
data::PreferenceBatch TinyBatch(int first, int count, int num_labels = 2);

void PerturbB(RunComponents& run);
std::vector<double> AllGrads(RunComponents& run);

}  // namespace pmol

#endif  // PMOL_TESTS_TRAIN_TRAIN_TEST_UTIL_H_

// RunConfig: defaults, text-format parsing and its errors, printing, the example config,
// and every validation rule (each error must start with the offending field's path).
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "proto/run_config.pb.h"
#include "proto/run_config_io.h"
#include "proto/run_config_validation.h"

namespace pmol::config {
namespace {

using google::protobuf::util::MessageDifferencer;

const char kExample[] = "proto/examples/pmol_dpo.textproto";

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}
bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name + "." + std::to_string(::getpid());
}

RunConfig MustParse(const std::string& text) {
  absl::StatusOr<RunConfig> c = ParseRunConfig(text, "test");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : RunConfig();
}

// A small valid PMoL config that the rule tests break one field at a time.
RunConfig Valid() {
  return MustParse(R"pb(
    adapter { num_groups: 2 experts_per_group: 2 }
    data { preference_names: "helpful" preference_names: "harmless" }
  )pb");
}

// Expects `mutate(Valid())` to fail validation with a message starting with `path`
// (then ": ") and containing each of `parts`.
void ExpectInvalid(const std::function<void(RunConfig&)>& mutate, const std::string& path,
                   std::vector<std::string> parts = {}) {
  RunConfig c = Valid();
  mutate(c);
  absl::Status s = ValidateRunConfig(c);
  ASSERT_FALSE(s.ok()) << "expected an error at " << path;
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  const std::string msg(s.message());
  EXPECT_TRUE(StartsWith(msg, path + ": ")) << "message: " << msg << "\nexpected path: " << path;
  for (const std::string& p : parts) EXPECT_TRUE(Contains(msg, p)) << msg << "\nlacks: " << p;
}

void ExpectValid(const std::function<void(RunConfig&)>& mutate) {
  RunConfig c = Valid();
  mutate(c);
  absl::Status s = ValidateRunConfig(c);
  EXPECT_TRUE(s.ok()) << s;
}

// ---------------------------------------------------------------- defaults, parsing

TEST(RunConfigTest, EmptyConfigHasDocumentedDefaults) {
  RunConfig c = MustParse("");
  EXPECT_EQ(c.seed(), 1234u);
  EXPECT_EQ(c.model().dtype(), "f32");
  EXPECT_EQ(c.model().device(), "cpu");
  EXPECT_EQ(c.model().threads(), 0);
  EXPECT_FALSE(c.model().recompute_activations());
  EXPECT_EQ(c.adapter().kind(), AdapterConfig::PMOL);
  EXPECT_EQ(c.adapter().num_groups(), 0);
  EXPECT_EQ(c.adapter().experts_per_group(), 2);
  EXPECT_EQ(c.adapter().empty_experts(), 1);
  EXPECT_EQ(c.adapter().rank(), 8);
  EXPECT_DOUBLE_EQ(c.adapter().alpha(), 16);
  EXPECT_DOUBLE_EQ(c.adapter().dropout(), 0);
  EXPECT_EQ(c.adapter().target_modules_size(), 0);
  EXPECT_DOUBLE_EQ(c.adapter().router_temperature(), 1);
  EXPECT_EQ(c.adapter().top_k(), 0);
  EXPECT_DOUBLE_EQ(c.adapter().router_init_std(), 0.01);
  EXPECT_EQ(c.adapter().lora_init(), AdapterConfig::KAIMING_UNIFORM);
  EXPECT_EQ(c.objective().kind(), ObjectiveConfig::DPO);
  EXPECT_EQ(c.objective().dpo_loss(), ObjectiveConfig::SIGMOID);
  EXPECT_DOUBLE_EQ(c.objective().beta(), 0.1);
  EXPECT_DOUBLE_EQ(c.objective().group_loss_weight(), 0.1);
  EXPECT_DOUBLE_EQ(c.objective().group_label_smoothing(), 0.1);
  EXPECT_DOUBLE_EQ(c.objective().balance_loss_weight(), 0.01);
  EXPECT_DOUBLE_EQ(c.optimizer().lr(), 2e-4);
  EXPECT_DOUBLE_EQ(c.optimizer().beta1(), 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer().beta2(), 0.999);
  EXPECT_DOUBLE_EQ(c.optimizer().eps(), 1e-8);
  EXPECT_EQ(c.optimizer().schedule(), OptimizerConfig::COSINE);
  EXPECT_DOUBLE_EQ(c.optimizer().max_grad_norm(), 1.0);
  EXPECT_EQ(c.optimizer().grad_accumulation_steps(), 1);
  EXPECT_DOUBLE_EQ(c.optimizer().epochs(), 1);
  EXPECT_EQ(c.data().max_length(), 512);
  EXPECT_EQ(c.data().max_prompt_length(), 256);
  EXPECT_EQ(c.data().prompt_truncation(), "keep_end");
  EXPECT_EQ(c.data().on_bad_input(), "skip");
  EXPECT_EQ(c.data().chat_template(), "chatml");
  EXPECT_EQ(c.data().micro_batch_size(), 4);
  EXPECT_EQ(c.parallel().dp(), 0);
  EXPECT_EQ(c.parallel().ep(), 1);
  EXPECT_EQ(c.parallel().zero_stage(), 0);
  EXPECT_EQ(c.parallel().bucket_mb(), 25);
  EXPECT_EQ(c.parallel().collective_timeout_s(), 600);
  EXPECT_EQ(c.data().global_batch_size(), 0);
  EXPECT_EQ(c.checkpoint().every_steps(), 0);
  EXPECT_EQ(c.checkpoint().keep_last(), 2);
  EXPECT_TRUE(c.checkpoint().resume());
  EXPECT_EQ(c.logging().every_steps(), 1);
}

TEST(RunConfigTest, EmptyConfigNeedsPreferenceGroupsForPmol) {
  absl::Status s = ValidateRunConfig(RunConfig());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(std::string(s.message()),
            "adapter.num_groups: PMoL needs at least one preference group, got 0");
  RunConfig lora;
  lora.mutable_adapter()->set_kind(AdapterConfig::LORA);
  EXPECT_TRUE(ValidateRunConfig(lora).ok()) << ValidateRunConfig(lora);
  RunConfig full;
  full.mutable_adapter()->set_kind(AdapterConfig::FULL);
  EXPECT_TRUE(ValidateRunConfig(full).ok()) << ValidateRunConfig(full);
}

TEST(RunConfigTest, FullConfigParses) {
  RunConfig c = MustParse(R"pb(
    seed: 7
    model { path: "/m" dtype: "bf16" device: "cuda" threads: 4 recompute_activations: true }
    adapter {
      kind: PMOL
      groups { name: "a" experts: 3 }
      groups { name: "b" experts: 1 }
      empty_experts: 2 rank: 16 alpha: 32 dropout: 0.1
      target_modules: ["q_proj", "v"] layers: [0, 5]
      router_temperature: 0.5 top_k: 2 router_init_std: 0.02 lora_init: GAUSSIAN
    }
    objective {
      kind: DPO dpo_loss: IPO beta: 0.2 label_smoothing: 0.1 ipo_length_normalize: true
      precompute_reference: true group_loss_weight: 0.3 group_label_smoothing: 0
      balance_loss_weight: 0
    }
    optimizer {
      lr: 1e-3 beta1: 0.8 beta2: 0.99 eps: 1e-6 weight_decay: 0.01 decay_routers: true
      schedule: LINEAR warmup_steps: 5 min_lr_ratio: 0.1 max_grad_norm: 0
      grad_accumulation_steps: 8 max_steps: 100 epochs: 0.5
    }
    data {
      tokenizer: "/tok" preference_names: ["a", "b"]
      train { path: "x.jsonl" format: "fields" preference: "a" mix_weight: 2 }
      eval { path: "y.jsonl" }
      prompt_field: "p" chosen_field: "c" rejected_field: "r" preference_field: "l"
      chat_template: "llama3" max_length: 128 max_prompt_length: 64
      prompt_truncation: "keep_start" truncate_responses: false add_special_tokens: false
      append_eos: false on_bad_input: "fail" micro_batch_size: 2 packing: true shuffle: false
    }
    parallel { dp: 1 ep: 2 zero_stage: 2 bucket_mb: 50 preference_aware_sampling: true }
    checkpoint { dir: "/ck" every_steps: 10 keep_last: 3 resume: false }
    logging { every_steps: 5 metrics_file: "/m.jsonl" }
  )pb");
  EXPECT_EQ(c.seed(), 7u);
  EXPECT_EQ(c.model().dtype(), "bf16");
  EXPECT_EQ(c.adapter().groups_size(), 2);
  EXPECT_EQ(c.adapter().groups(0).experts(), 3);
  EXPECT_EQ(c.adapter().target_modules(0), "q_proj");
  EXPECT_EQ(c.adapter().layers(1), 5);
  EXPECT_EQ(c.adapter().lora_init(), AdapterConfig::GAUSSIAN);
  EXPECT_EQ(c.objective().dpo_loss(), ObjectiveConfig::IPO);
  EXPECT_EQ(c.optimizer().schedule(), OptimizerConfig::LINEAR);
  EXPECT_EQ(c.optimizer().max_steps(), 100);
  EXPECT_EQ(c.data().train(0).preference(), "a");
  EXPECT_EQ(c.data().eval(0).format(), "auto");
  EXPECT_EQ(c.parallel().zero_stage(), 2);
  EXPECT_EQ(c.parallel().ep(), 2);
  EXPECT_EQ(c.checkpoint().keep_last(), 3);
  EXPECT_EQ(c.logging().metrics_file(), "/m.jsonl");
  EXPECT_TRUE(ValidateRunConfig(c).ok()) << ValidateRunConfig(c);
}

TEST(RunConfigTest, ParseErrorNamesFileLineAndColumn) {
  absl::StatusOr<RunConfig> c = ParseRunConfig("seed: 1\nadapter {\n  rank: \"eight\"\n}\n",
                                               "run.textproto");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string msg(c.status().message());
  // Line 3, column 9 (1-based) is where "eight" starts.
  EXPECT_TRUE(StartsWith(msg, "run.textproto:3:9: ")) << msg;
  EXPECT_TRUE(Contains(msg, "integer")) << msg;

  c = ParseRunConfig("model {\n  dtype: \"f32\"\n", "unterminated.textproto");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(StartsWith(std::string(c.status().message()), "unterminated.textproto:"))
      << c.status();
  EXPECT_TRUE(Contains(std::string(c.status().message()), "end of input")) << c.status();
}

TEST(RunConfigTest, UnknownFieldIsNamed) {
  absl::StatusOr<RunConfig> c =
      ParseRunConfig("adapter {\n  rank: 4\n  rnak: 4\n}\n", "run.textproto");
  ASSERT_FALSE(c.ok());
  const std::string msg(c.status().message());
  EXPECT_TRUE(StartsWith(msg, "run.textproto:3:")) << msg;
  EXPECT_TRUE(Contains(msg, "\"rnak\"")) << msg;
  EXPECT_TRUE(Contains(msg, "pmol.config.AdapterConfig")) << msg;

  c = ParseRunConfig("no_such_section {}", "x");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(std::string(c.status().message()), "no_such_section")) << c.status();
}

TEST(RunConfigTest, RepeatedSingularFieldAndBadEnumAreErrors) {
  absl::StatusOr<RunConfig> c = ParseRunConfig("seed: 1 seed: 2", "x");
  EXPECT_FALSE(c.ok());
  c = ParseRunConfig("adapter { kind: MOE }", "x");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(std::string(c.status().message()), "MOE")) << c.status();
}

TEST(RunConfigTest, ReadMissingFileIsNotFoundNamingThePath) {
  const std::string path = TempPath("does_not_exist.textproto");
  absl::StatusOr<RunConfig> c = ReadRunConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(std::string(c.status().message()), path)) << c.status();
}

TEST(RunConfigTest, ReadDirectoryIsAnError) {
  const char* dir = std::getenv("TEST_TMPDIR");
  absl::StatusOr<RunConfig> c = ReadRunConfig(dir ? dir : "/tmp");
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(Contains(std::string(c.status().message()), "directory")) << c.status();
}

TEST(RunConfigTest, ReadFileAndItsErrorsNameThePath) {
  const std::string path = TempPath("run.textproto");
  {
    std::ofstream out(path);
    out << "# comment\nseed: 5\nadapter { num_groups: 2 }\n";
  }
  absl::StatusOr<RunConfig> c = ReadRunConfig(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->seed(), 5u);
  EXPECT_EQ(c->adapter().num_groups(), 2);
  {
    std::ofstream out(path);
    out << "seed: 5\n\nlogging { every_step: 3 }\n";
  }
  c = ReadRunConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(StartsWith(std::string(c.status().message()), path + ":3:")) << c.status();
  EXPECT_TRUE(Contains(std::string(c.status().message()), "every_step")) << c.status();
  std::remove(path.c_str());
}

TEST(RunConfigTest, TextRoundTrips) {
  RunConfig c = Valid();
  c.set_seed(99);
  c.mutable_adapter()->set_alpha(0.1 + 0.2);  // not exactly representable in short decimal
  c.mutable_adapter()->add_target_modules("q");
  c.mutable_adapter()->add_layers(3);
  c.mutable_optimizer()->set_lr(3.0e-5);
  c.mutable_optimizer()->set_schedule(OptimizerConfig::LINEAR);
  c.mutable_data()->add_train()->set_path("a \"quoted\" path\n.jsonl");
  const std::string text = RunConfigToText(c);
  absl::StatusOr<RunConfig> back = ParseRunConfig(text, "printed");
  ASSERT_TRUE(back.ok()) << back.status() << "\n" << text;
  EXPECT_TRUE(MessageDifferencer::Equals(c, *back)) << text;
  // Unset fields are left out.
  EXPECT_FALSE(Contains(text, "router_temperature")) << text;
}

TEST(RunConfigTest, EffectiveTextShowsDefaultsAndParsesToSameValues) {
  RunConfig c = Valid();
  c.mutable_data()->add_train()->set_path("a.jsonl");
  const std::string text = EffectiveRunConfigToText(c);
  for (const char* field : {"router_temperature: 1", "seed: 1234", "keep_last: 2",
                            "zero_stage: 0", "format: \"auto\"", "schedule: COSINE"}) {
    EXPECT_TRUE(Contains(text, field)) << field << "\n" << text;
  }
  // Paths with no default stay unset.
  EXPECT_FALSE(Contains(text, "path: \"\"")) << text;
  EXPECT_FALSE(Contains(text, "dir:")) << text;
  EXPECT_TRUE(Contains(text, "path: \"a.jsonl\"")) << text;
  absl::StatusOr<RunConfig> back = ParseRunConfig(text, "effective");
  ASSERT_TRUE(back.ok()) << back.status();
  MessageDifferencer diff;
  diff.set_message_field_comparison(MessageDifferencer::EQUIVALENT);  // set == default
  EXPECT_TRUE(diff.Compare(c, *back)) << text;
  EXPECT_TRUE(ValidateRunConfig(*back).ok());
}

TEST(RunConfigTest, ExampleConfigParsesAndValidates) {
  absl::StatusOr<RunConfig> c = ReadRunConfig(kExample);
  ASSERT_TRUE(c.ok()) << c.status();
  absl::Status s = ValidateRunConfig(*c);
  EXPECT_TRUE(s.ok()) << s;
  // It shows every section.
  EXPECT_TRUE(c->has_seed());
  EXPECT_TRUE(c->has_model());
  EXPECT_TRUE(c->has_adapter());
  EXPECT_TRUE(c->has_objective());
  EXPECT_TRUE(c->has_optimizer());
  EXPECT_TRUE(c->has_data());
  EXPECT_TRUE(c->has_parallel());
  EXPECT_TRUE(c->has_checkpoint());
  EXPECT_TRUE(c->has_logging());
  EXPECT_EQ(c->adapter().groups_size(), c->data().preference_names_size());
}

TEST(RunConfigTest, ValidBaselineValidates) {
  absl::Status s = ValidateRunConfig(Valid());
  EXPECT_TRUE(s.ok()) << s;
}

// ---------------------------------------------------------------- target modules

TEST(RunConfigTest, ParseTargetModuleAcceptsBothSpellings) {
  const char* short_names[] = {"q", "k", "v", "o", "gate", "up", "down"};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(*ParseTargetModule(short_names[i]), i);
    EXPECT_EQ(*ParseTargetModule(std::string(short_names[i]) + "_proj"), i);
  }
  EXPECT_FALSE(ParseTargetModule("Q").ok());
  EXPECT_FALSE(ParseTargetModule("").ok());
  EXPECT_FALSE(ParseTargetModule("qkv_proj").ok());
}

// ---------------------------------------------------------------- adapter rules

TEST(RunConfigValidationTest, Adapter) {
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_rank(-1); }, "adapter.rank",
                {"must be >= 1, got -1"});
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_rank(0); }, "adapter.rank");
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_alpha(0); }, "adapter.alpha");
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_alpha(NAN); }, "adapter.alpha",
                {"finite"});
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_dropout(1); }, "adapter.dropout");
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_dropout(-0.1); }, "adapter.dropout");
  ExpectValid([](RunConfig& c) { c.mutable_adapter()->set_dropout(0.5); });
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_router_temperature(0); },
                "adapter.router_temperature");
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_router_init_std(-0.1); },
                "adapter.router_init_std");
  ExpectValid([](RunConfig& c) { c.mutable_adapter()->set_router_init_std(0); });
}

TEST(RunConfigValidationTest, PmolGroups) {
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->set_num_groups(0);
        c.mutable_data()->clear_preference_names();
      },
      "adapter.num_groups", {"PMoL needs at least one preference group, got 0"});
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_experts_per_group(0); },
                "adapter.experts_per_group", {"got 0"});
  ExpectInvalid(
      [](RunConfig& c) {
        AdapterConfig* a = c.mutable_adapter();
        a->clear_num_groups();
        a->add_groups()->set_experts(2);
        a->add_groups()->set_experts(0);
      },
      "adapter.groups[1].experts", {"must be >= 1, got 0"});
  // experts_per_group is not used when groups are listed.
  ExpectValid([](RunConfig& c) {
    AdapterConfig* a = c.mutable_adapter();
    a->clear_num_groups();
    a->set_experts_per_group(0);
    a->add_groups();
    a->add_groups();
  });
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->add_groups();
        c.mutable_adapter()->add_groups();
        c.mutable_adapter()->set_num_groups(3);
      },
      "adapter.num_groups", {"3", "2"});
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_empty_experts(-1); },
                "adapter.empty_experts");
  ExpectValid([](RunConfig& c) { c.mutable_adapter()->set_empty_experts(0); });
}

TEST(RunConfigValidationTest, CapacityFactorNeedsTopKRouting) {
  ExpectValid([](RunConfig& c) {
    c.mutable_adapter()->set_top_k(2);
    c.mutable_adapter()->set_capacity_factor(1.25);
  });
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_capacity_factor(1.0); }, "adapter.capacity_factor",
                {"top_k"});
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->set_top_k(5);  // every slot: dense
        c.mutable_adapter()->set_capacity_factor(1.0);
      },
      "adapter.capacity_factor", {"top_k"});
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->set_top_k(2);
        c.mutable_adapter()->set_capacity_factor(-0.5);
      },
      "adapter.capacity_factor", {">= 0", "-0.5"});
  // LoRA ignores the router fields.
  ExpectValid([](RunConfig& c) {
    c.mutable_adapter()->set_kind(config::AdapterConfig::LORA);
    c.mutable_adapter()->set_capacity_factor(1.0);
  });
}

TEST(RunConfigValidationTest, TopK) {
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_top_k(-1); }, "adapter.top_k");
  // 2 groups x 2 experts + 1 empty expert = 5 router slots.
  ExpectValid([](RunConfig& c) { c.mutable_adapter()->set_top_k(5); });
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_top_k(6); }, "adapter.top_k",
                {"5", "4 experts", "1 empty", "got 6"});
  ExpectInvalid(
      [](RunConfig& c) {
        AdapterConfig* a = c.mutable_adapter();
        a->clear_num_groups();
        a->add_groups()->set_experts(3);
        a->add_groups()->set_experts(1);
        a->set_empty_experts(0);
        a->set_top_k(5);
      },
      "adapter.top_k", {"4 experts", "0 empty", "got 5"});
}

TEST(RunConfigValidationTest, TargetModules) {
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->add_target_modules("q");
        c.mutable_adapter()->add_target_modules("k");
        c.mutable_adapter()->add_target_modules("qq");
      },
      "adapter.target_modules[2]",
      {"unknown module \"qq\"; expected one of q, k, v, o, gate, up, down", "q_proj"});
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->add_target_modules("q");
        c.mutable_adapter()->add_target_modules("v");
        c.mutable_adapter()->add_target_modules("q_proj");
      },
      "adapter.target_modules[2]", {"twice", "adapter.target_modules[0]"});
  ExpectValid([](RunConfig& c) {
    for (const char* m : {"q_proj", "k", "v_proj", "o", "gate_proj", "up", "down_proj"}) {
      c.mutable_adapter()->add_target_modules(m);
    }
  });
}

TEST(RunConfigValidationTest, Layers) {
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->add_layers(-1); }, "adapter.layers[0]");
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->add_layers(0);
        c.mutable_adapter()->add_layers(3);
        c.mutable_adapter()->add_layers(0);
      },
      "adapter.layers[2]", {"twice"});
}

TEST(RunConfigValidationTest, LoraIgnoresGroupFields) {
  ExpectValid([](RunConfig& c) {
    AdapterConfig* a = c.mutable_adapter();
    a->set_kind(AdapterConfig::LORA);
    a->set_num_groups(0);
    a->set_experts_per_group(0);
    a->add_groups()->set_experts(-3);
    a->set_empty_experts(-1);
    a->set_top_k(100);
    c.mutable_data()->add_preference_names("third");
  });
  // ... but not the fields a LoRA expert uses.
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_adapter()->set_kind(AdapterConfig::LORA);
        c.mutable_adapter()->set_rank(0);
      },
      "adapter.rank");
}

TEST(RunConfigValidationTest, GroupsAgreeWithPreferenceNames) {
  ExpectInvalid([](RunConfig& c) { c.mutable_adapter()->set_num_groups(3); },
                "adapter.num_groups", {"3", "data.preference_names", "2"});
  ExpectInvalid(
      [](RunConfig& c) {
        AdapterConfig* a = c.mutable_adapter();
        a->clear_num_groups();
        a->add_groups()->set_name("helpful");
      },
      "adapter.groups", {"data.preference_names"});
  ExpectInvalid(
      [](RunConfig& c) {
        AdapterConfig* a = c.mutable_adapter();
        a->clear_num_groups();
        a->add_groups()->set_name("helpful");
        a->add_groups()->set_name("honest");
      },
      "adapter.groups[1].name", {"\"honest\"", "data.preference_names[1]", "\"harmless\""});
  // Unnamed groups, or named in the right order, agree.
  ExpectValid([](RunConfig& c) {
    AdapterConfig* a = c.mutable_adapter();
    a->clear_num_groups();
    a->add_groups()->set_name("helpful");
    a->add_groups();
  });
  // Without preference names, groups only need distinct names.
  ExpectValid([](RunConfig& c) {
    c.mutable_data()->clear_preference_names();
    c.mutable_adapter()->set_num_groups(5);
  });
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_data()->clear_preference_names();
        AdapterConfig* a = c.mutable_adapter();
        a->clear_num_groups();
        a->add_groups()->set_name("x");
        a->add_groups()->set_name("x");
      },
      "adapter.groups[1].name", {"duplicate"});
}

// ---------------------------------------------------------------- objective

TEST(RunConfigValidationTest, Objective) {
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_beta(0); }, "objective.beta",
                {"must be > 0, got 0"});
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_label_smoothing(0.5); },
                "objective.label_smoothing", {"[0, 0.5)"});
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_label_smoothing(-0.1); },
                "objective.label_smoothing");
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_group_loss_weight(-1); },
                "objective.group_loss_weight");
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_group_label_smoothing(1); },
                "objective.group_label_smoothing");
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_group_label_smoothing(-0.5); },
                "objective.group_label_smoothing");
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_balance_loss_weight(-0.01); },
                "objective.balance_loss_weight");
  ExpectInvalid([](RunConfig& c) { c.mutable_objective()->set_beta(INFINITY); },
                "objective.beta", {"finite"});
}

// ---------------------------------------------------------------- optimizer

TEST(RunConfigValidationTest, Optimizer) {
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_lr(-1e-4); }, "optimizer.lr");
  ExpectValid([](RunConfig& c) { c.mutable_optimizer()->set_lr(0); });
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_beta1(1); }, "optimizer.beta1");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_beta1(-0.1); }, "optimizer.beta1");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_beta2(1.5); }, "optimizer.beta2");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_eps(0); }, "optimizer.eps");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_weight_decay(-0.1); },
                "optimizer.weight_decay");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_warmup_steps(-1); },
                "optimizer.warmup_steps");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_min_lr_ratio(1.1); },
                "optimizer.min_lr_ratio", {"[0, 1]"});
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_min_lr_ratio(-0.1); },
                "optimizer.min_lr_ratio");
  ExpectValid([](RunConfig& c) { c.mutable_optimizer()->set_min_lr_ratio(1); });
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_max_grad_norm(-1); },
                "optimizer.max_grad_norm");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_grad_accumulation_steps(0); },
                "optimizer.grad_accumulation_steps");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_max_steps(-5); },
                "optimizer.max_steps");
  ExpectInvalid([](RunConfig& c) { c.mutable_optimizer()->set_epochs(0); }, "optimizer.epochs");
}

// ---------------------------------------------------------------- data

TEST(RunConfigValidationTest, DataLengthsAndBatches) {
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_micro_batch_size(0); },
                "data.micro_batch_size");
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_max_length(1); }, "data.max_length");
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_max_prompt_length(-1); },
                "data.max_prompt_length");
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_data()->set_max_length(64);
        c.mutable_data()->set_max_prompt_length(64);
      },
      "data.max_prompt_length", {"data.max_length 64", "got 64"});
  ExpectValid([](RunConfig& c) {
    c.mutable_data()->set_max_length(2);
    c.mutable_data()->set_max_prompt_length(0);
  });
}

TEST(RunConfigValidationTest, DataEnumeratedStrings) {
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_prompt_truncation("keep_middle"); },
                "data.prompt_truncation", {"keep_end", "keep_start"});
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_on_bad_input("ignore"); },
                "data.on_bad_input", {"skip", "fail"});
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_chat_template("vicuna"); },
                "data.chat_template");
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_prompt_field(""); },
                "data.prompt_field");
  ExpectInvalid(
      [](RunConfig& c) {
        c.mutable_data()->add_train()->set_path("a");
        c.mutable_data()->add_train()->set_format("csv");
      },
      "data.train[1].format", {"\"csv\"", "auto, fields, hh_rlhf, messages"});
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->add_eval()->set_format("json"); },
                "data.eval[0].format");
  ExpectValid([](RunConfig& c) {
    for (const char* f : {"auto", "fields", "hh_rlhf", "messages"}) {
      c.mutable_data()->add_train()->set_format(f);
    }
  });
}

TEST(RunConfigValidationTest, DataSources) {
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->add_train()->set_mix_weight(0); },
                "data.train[0].mix_weight", {"must be > 0"});
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->add_train()->set_preference("funny"); },
                "data.train[0].preference", {"\"funny\""});
  ExpectValid([](RunConfig& c) { c.mutable_data()->add_train()->set_preference("harmless"); });
}

TEST(RunConfigValidationTest, PreferenceNames) {
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_preference_names(1, ""); },
                "data.preference_names[1]", {"empty"});
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_preference_names(1, "helpful"); },
                "data.preference_names[1]", {"duplicate", "\"helpful\""});
}

// ---------------------------------------------------------------- the rest

TEST(RunConfigValidationTest, Parallel) {
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_ep(0); }, "parallel.ep");
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_dp(-1); }, "parallel.dp");
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_zero_stage(3); },
                "parallel.zero_stage", {"got 3"});
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_zero_stage(-1); },
                "parallel.zero_stage");
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_bucket_mb(0); },
                "parallel.bucket_mb");
  ExpectInvalid([](RunConfig& c) { c.mutable_parallel()->set_collective_timeout_s(0); },
                "parallel.collective_timeout_s");
  ExpectInvalid([](RunConfig& c) { c.mutable_data()->set_global_batch_size(-2); },
                "data.global_batch_size");
}

TEST(RunConfigValidationTest, CheckpointAndLogging) {
  ExpectInvalid([](RunConfig& c) { c.mutable_checkpoint()->set_every_steps(-1); },
                "checkpoint.every_steps");
  ExpectInvalid([](RunConfig& c) { c.mutable_checkpoint()->set_keep_last(0); },
                "checkpoint.keep_last");
  ExpectInvalid([](RunConfig& c) { c.mutable_logging()->set_every_steps(0); },
                "logging.every_steps");
}

TEST(RunConfigValidationTest, Model) {
  ExpectInvalid([](RunConfig& c) { c.mutable_model()->set_dtype("fp32"); }, "model.dtype",
                {"\"fp32\"", "f32, f64, bf16, f16"});
  for (const char* d : {"f32", "f64", "bf16", "f16"}) {
    ExpectValid([d](RunConfig& c) { c.mutable_model()->set_dtype(d); });
  }
  ExpectInvalid([](RunConfig& c) { c.mutable_model()->set_device("gpu"); }, "model.device");
  ExpectValid([](RunConfig& c) { c.mutable_model()->set_device("cuda"); });
  ExpectInvalid([](RunConfig& c) { c.mutable_model()->set_threads(-2); }, "model.threads");
  // model.path and data sources are not required here.
  ExpectValid([](RunConfig& c) { c.clear_model(); c.mutable_data()->clear_train(); });
}

}  // namespace
}  // namespace pmol::config

namespace pmol::config {
namespace {

TEST(ApplyOverrideTest, SetsScalarsEnumsStringsAndRepeated) {
  RunConfig c;
  ASSERT_TRUE(ApplyOverride("optimizer.lr=3e-4", &c).ok());
  EXPECT_DOUBLE_EQ(c.optimizer().lr(), 3e-4);
  ASSERT_TRUE(ApplyOverride("adapter.kind=LORA", &c).ok());
  EXPECT_EQ(c.adapter().kind(), AdapterConfig::LORA);
  ASSERT_TRUE(ApplyOverride("model.path=/tmp/a \"b\"", &c).ok());
  EXPECT_EQ(c.model().path(), "/tmp/a \"b\"");
  ASSERT_TRUE(ApplyOverride("model.path=\"quoted\"", &c).ok());
  EXPECT_EQ(c.model().path(), "quoted");
  ASSERT_TRUE(ApplyOverride("output_dir=", &c).ok());
  EXPECT_TRUE(c.has_output_dir());
  EXPECT_EQ(c.output_dir(), "");
  ASSERT_TRUE(ApplyOverride("model.recompute_activations=true", &c).ok());
  EXPECT_TRUE(c.model().recompute_activations());
  c.mutable_data()->add_preference_names("old");
  ASSERT_TRUE(ApplyOverride("data.preference_names=[\"a\", \"b\"]", &c).ok());
  ASSERT_EQ(c.data().preference_names_size(), 2);
  EXPECT_EQ(c.data().preference_names(1), "b");
  ASSERT_TRUE(ApplyOverride("adapter.layers=3", &c).ok());
  ASSERT_EQ(c.adapter().layers_size(), 1);
  EXPECT_EQ(c.adapter().layers(0), 3);
}

TEST(ApplyOverrideTest, ErrorsNameTheOverrideAndLeaveTheConfigUnchanged) {
  RunConfig c;
  c.mutable_optimizer()->set_lr(1e-3);
  const RunConfig before = c;
  struct Case {
    const char* assignment;
    const char* expect;
  };
  for (const Case& k : {Case{"optimizer.lr", "expected field.path=value"},
                        Case{"optimizer.lrr=1", "pmol.config.OptimizerConfig has no field 'lrr'"},
                        Case{"optimizer.lr=fast", "--set=optimizer.lr=fast: "},
                        Case{"adapter.kind=MOE", "--set=adapter.kind=MOE: "},
                        Case{"optimizer=1", "'optimizer' is a message"},
                        Case{"data.train.path=x", "'train' is a repeated field"},
                        Case{"seed.x=1", "'seed' is not a message"},
                        Case{"model.threads=1.5", "--set=model.threads=1.5: "}}) {
    absl::Status s = ApplyOverride(k.assignment, &c);
    EXPECT_FALSE(s.ok()) << k.assignment;
    EXPECT_NE(std::string(s.message()).find(k.expect), std::string::npos) << s.message();
    EXPECT_EQ(c.DebugString(), before.DebugString()) << k.assignment;
  }
}

}  // namespace
}  // namespace pmol::config

#!/usr/bin/env bash
# Expert parallelism of `pmol train` under mpirun, and what preference-aware sampling
# does to the routed traffic. One PMoL DPO run (2 preference groups of 2 experts, 1 empty
# expert, top-1 routing, a strong group loss so that rows of preference p learn to route
# to group p) is trained four ways, each with the same global batch:
#   1 process                      (the reference)
#   2 ranks, dp 2                  (every rank holds every expert)
#   2 ranks, ep 2                  (each rank holds one group; rows go where they route)
#   2 ranks, ep 2, preference-aware sampling (pairs of preference p go to the rank of
#                                  group p, so rows that route to their group stay local)
# For each it prints the step time, the bytes rank 0 sent per step through the experts'
# all-to-all (comm/expert_all_to_all_bytes_per_step) in the first and last logged
# windows, the gradient bytes, and the final group loss; then the ratio of the routed
# bytes with and without preference-aware sampling (late in training, when the router
# follows the preferences). Both ep runs train the same pairs; the preference-aware run
# batches them differently, so its losses differ slightly.
#
#   bash benchmarks/expert_parallel_benchmark.sh [--steps=N] [--model=CONFIG.json]
# Defaults: 60 steps of benchmarks/configs/llama_20m.json. Results vary run to run on
# shared machines: compare within a run.
set -euo pipefail
cd "$(dirname "$0")/.."

steps=60 model_config=benchmarks/configs/llama_20m.json
for arg in "$@"; do
  case "$arg" in
    --steps=*) steps=${arg#*=} ;;
    --model=*) model_config=${arg#*=} ;;
    *) echo "expert_parallel_benchmark.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
source benchmarks/ranks_setup.sh
bench_setup expert_parallel_benchmark.sh /tmp/pmol-ep-benchmark "$model_config"

write_config() {  # out_dir
  cat > "$1.textproto" <<EOF
seed: 1
output_dir: "$1"
model { path: "$work/model" threads: 1 }
adapter {
  kind: PMOL
  groups { name: "helpfulness" experts: 2 }
  groups { name: "harmlessness" experts: 2 }
  empty_experts: 1 rank: 8 alpha: 16 top_k: 1
  target_modules: ["q", "v", "down"]
}
objective { kind: DPO beta: 0.1 group_loss_weight: 1.0 }
optimizer { lr: 1e-2 warmup_steps: 2 max_steps: $steps }
data {
  tokenizer: "$work/data/tokenizer.json"
  preference_names: ["helpfulness", "harmlessness"]
  train { path: "$work/data/preference/helpfulness/train.jsonl" }
  train { path: "$work/data/preference/harmlessness/train.jsonl" }
  max_length: 128
  max_prompt_length: 64
  micro_batch_size: 2
  global_batch_size: 8
}
checkpoint { every_steps: 0 resume: false }
logging { every_steps: 5 }
EOF
}

echo "pmol expert-parallel benchmark: PMoL DPO of $model_config, 8 pairs per step, $steps steps," \
  "top-1 routing, 1 thread per rank, $(nproc) cores on this machine"
printf '%-34s %8s %18s %18s %16s %10s\n' run "step s" "a2a B/step first" "a2a B/step last" \
  "grad B/step" "L_group"
declare -A late_bytes
run() {  # name ranks extra-flags...
  local name=$1 n=$2
  shift 2
  local out="$work/$name"
  rm -rf "$out" "$out.textproto"
  write_config "$out"
  bench_launch "$n"
  if ! "${launch[@]}" train --config="$out.textproto" "$@" >"$out.log" 2>&1; then
    echo "expert_parallel_benchmark.sh: run $name failed; see $out.log" >&2
    tail -5 "$out.log" >&2
    exit 1
  fi
  read -r step_s first last grad group < <(/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
key = "comm/expert_all_to_all_bytes_per_step"
late = rows[1:] or rows
print(sum(r["step_seconds"] for r in late) / len(late), rows[0].get(key, 0.0), rows[-1].get(key, 0.0),
      rows[-1].get("comm/gradient_bytes_per_step", 0.0), rows[-1]["loss/group"])
PY
)
  late_bytes[$name]=$last
  printf '%-34s %8.3f %18.0f %18.0f %16.0f %10.4f\n' "$name" "$step_s" "$first" "$last" "$grad" "$group"
}
run one_process 1
run dp2 2
run ep2 2 --set=parallel.ep=2
run ep2_preference_aware 2 --set=parallel.ep=2 --set=parallel.preference_aware_sampling=true
/usr/bin/python3 -c "
a, b = ${late_bytes[ep2]}, ${late_bytes[ep2_preference_aware]}
print('routed bytes per step at the end, preference-aware / plain: %.3f' % (b / a if a else float('nan')))"

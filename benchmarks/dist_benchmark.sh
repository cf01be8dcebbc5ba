#!/usr/bin/env bash
# Data-parallel scaling of `pmol train` under mpirun: 1, 2 and 4 ranks (one thread each)
# train the same run (the same global batch of pairs per step: strong scaling) with ZeRO
# stages 0, 1 and 2. For each it prints the step time, tokens/s, the bytes rank 0 sent
# per step (the optimizer's gradient/parameter collectives, from the trainer's
# comm/gradient_bytes_per_step, and the rest: metrics, agreement), the analytic volume of
# dist/zero_optimizer.h for rank 0, and the scaling efficiency T(1) / (N T(N)). Each
# multi-rank run is made with the gradient reduction overlapped with the backward
# (parallel.overlap_reduction, the default) and after it, side by side: "wait s" is the
# time per step a rank stays blocked on gradient reductions once its backward is over
# (comm/gradient_wait_seconds_per_step), what the overlap is there to shrink.
#
#   stage 0: AR(Ψ) = 2(N-1)/N Ψ b
#   stage 1: RS + AG = 2 (Ψ - own) b + AR(one f64 norm)
#   stage 2: A RS + AG = (A + 1)(Ψ - own) b + AR(norm)   (A: micro-batches per rank)
# Ψ: trainable elements, b = 4 (f32), own: rank 0's shard (the first of EvenBlocks).
#
#   bash benchmarks/dist_benchmark.sh [--kind=full|pmol] [--steps=N] [--ranks="1 2 4"]
#                                     [--stages="0 1 2"] [--overlap="true false"]
#                                     [--bucket-mb=25] [--model=CONFIG.json]
# Defaults: full fine-tuning (Ψ = every weight, the ZeRO case) of the ~20M-parameter
# benchmarks/configs/llama_20m.json, 6 measured steps after 2 warm-up steps. Ranks beyond
# the machine's cores share cores (efficiency then falls for that reason alone: say so
# when you quote it). Results vary run to run on shared machines: compare within a run.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=full steps=6 ranks="1 2 4" stages="0 1 2" overlaps="true false" bucket_mb=25
model_config=benchmarks/configs/llama_20m.json
for arg in "$@"; do
  case "$arg" in
    --kind=*) kind=${arg#*=} ;;
    --steps=*) steps=${arg#*=} ;;
    --ranks=*) ranks=${arg#*=} ;;
    --stages=*) stages=${arg#*=} ;;
    --overlap=*) overlaps=${arg#*=} ;;
    --bucket-mb=*) bucket_mb=${arg#*=} ;;
    --model=*) model_config=${arg#*=} ;;
    *) echo "dist_benchmark.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done
case "$kind" in full|pmol) ;; *) echo "dist_benchmark.sh: --kind must be full or pmol" >&2; exit 2 ;; esac
source benchmarks/ranks_setup.sh
bench_setup dist_benchmark.sh /tmp/pmol-dist-benchmark "$model_config"

max_rank=0
for n in $ranks; do [ "$n" -gt "$max_rank" ] && max_rank=$n; done
global=$((2 * max_rank))  # micro-batches of 2 pairs; every rank count divides it
total_steps=$((steps + 2))

adapter=""
objective="objective { kind: DPO beta: 0.1 }"
if [ "$kind" = pmol ]; then
  adapter='adapter { kind: PMOL groups { name: "helpfulness" experts: 2 } groups { name: "harmlessness" experts: 2 } empty_experts: 1 rank: 8 alpha: 16 }'
else
  adapter='adapter { kind: FULL }'
fi

write_config() {  # out_dir
  cat > "$1.textproto" <<EOF
seed: 1
output_dir: "$1"
model { path: "$work/model" threads: 1 }
$adapter
$objective
optimizer { lr: 1e-4 warmup_steps: 0 max_steps: $total_steps }
data {
  tokenizer: "$work/data/tokenizer.json"
  preference_names: ["helpfulness", "harmlessness"]
  train { path: "$work/data/preference/helpfulness/train.jsonl" }
  train { path: "$work/data/preference/harmlessness/train.jsonl" }
  max_length: 128
  max_prompt_length: 64
  micro_batch_size: 2
  global_batch_size: $global
}
checkpoint { every_steps: 0 resume: false }  # the final one only
logging { every_steps: 2 }
EOF
}

echo "pmol data-parallel benchmark: $kind training of $model_config, $global pairs per step" \
  "(micro-batches of 2), $steps measured steps after 2 warm-up steps, 1 thread per rank," \
  "$(nproc) cores on this machine"
echo "gradient buckets of $bucket_mb MiB"
printf '%-6s %-5s %-8s %10s %10s %8s %16s %16s %8s %14s %10s\n' ranks stage overlap "step s" "tokens/s" \
  "wait s" "grad bytes/step" "analytic" "ratio" "other B/step" efficiency
declare -A base_time
for stage in $stages; do
  for n in $ranks; do
   for overlap in $overlaps; do
    [ "$n" -eq 1 ] && [ "$overlap" != "${overlaps%% *}" ] && continue  # one rank reduces nothing
    out="$work/run_${kind}_z${stage}_n${n}_overlap_${overlap}"
    rm -rf "$out" "$out.textproto"
    write_config "$out"
    bench_launch "$n"
    if ! "${launch[@]}" train --config="$out.textproto" --set=parallel.zero_stage="$stage" \
      --set=parallel.overlap_reduction="$overlap" --set=parallel.bucket_mb="$bucket_mb" >"$out.log" 2>&1; then
      echo "dist_benchmark.sh: the run with $n ranks, stage $stage failed; see $out.log" >&2
      tail -5 "$out.log" >&2
      exit 1
    fi
    # Step time and tokens/s averaged over the windows after warm-up; bytes of the last.
    read -r step_s tok_s wait grad other < <(/usr/bin/python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
rows = [r for r in rows if r["step"] > 2]
mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)
print(mean("step_seconds"), mean("tokens_per_second"), mean("comm/gradient_wait_seconds_per_step"),
      rows[-1].get("comm/gradient_bytes_per_step", 0.0), rows[-1].get("comm/other_bytes_per_step", 0.0))
PY
)
    # Ψ: the flat size the optimizer recorded in its checkpoint shard.
    psi=$(/usr/bin/python3 - "$out/checkpoints" <<'PY'
import glob, json, struct, sys
files = sorted(glob.glob(sys.argv[1] + "/step-*/optimizer-shard-0.safetensors"))
if not files:
    sys.exit("no optimizer shard under " + sys.argv[1])
raw = open(files[-1], "rb").read()
header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
print(int(header["__metadata__"]["flat_size"]))
PY
) || { echo "dist_benchmark.sh: cannot read the trainable size of $out" >&2; exit 1; }
    analytic=$(/usr/bin/python3 - "$psi" "$n" "$stage" "$global" <<'PY'
import sys
psi, n, stage, global_pairs = map(int, sys.argv[1:])
b = 4
if n == 1:
    print(0); sys.exit()
own = psi // n + (1 if psi % n else 0)
norm = 2 * (n - 1) * 8 // n
a = global_pairs // (2 * n)
if stage == 0:
    print(2 * (n - 1) * psi * b // n)
elif stage == 1:
    print(2 * (psi - own) * b + norm)
else:
    print((a + 1) * (psi - own) * b + norm)
PY
)
    [ "$n" -eq 1 ] && base_time[$stage]=$step_s
    /usr/bin/python3 - "$n" "$stage" "$overlap" "$step_s" "$tok_s" "$wait" "$grad" "$analytic" "$other" \
      "${base_time[$stage]:-0}" <<'PY'
import sys
n, stage, overlap = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if int(sys.argv[1]) > 1 else "-"
step_s, tok_s, wait, grad, analytic, other, base = map(float, sys.argv[4:])
ratio = f"{grad / analytic:.4f}" if analytic > 0 else "-"
eff = f"{base / (n * step_s) * 100:.0f}%" if base > 0 else "-"
print(f"{n:<6d} {stage:<5d} {overlap:<8s} {step_s:10.3f} {tok_s:10.0f} {wait:8.3f} {grad:16.0f} {analytic:16.0f} "
      f"{ratio:>8s} {other:14.0f} {eff:>10s}")
PY
   done
  done
done
echo "grad bytes/step: sent by rank 0 in the optimizer's collectives, counted by dist::Comm (ring"
echo "model); analytic: dist/zero_optimizer.h with Ψ from the checkpoint; other: metrics and agreement."

#!/usr/bin/env bash
# The GPU test suite: built on a machine with Bazel and the CUDA toolkit, run on a GPU
# machine that has neither Bazel nor MPI (the CUDA runtime and a driver only).
#
#   bash tests/gpu/run.sh pack [DIR]       (build machine; DIR defaults to gpu-suite/, git-ignored)
#     builds `--config=cuda` every CUDA test and the pmol binary, packs them with the shared
#     libraries they need (tests/cuda/run_on_gpu.sh pack) into DIR/suite.tar.xz, with an
#     end-to-end run:
#     the demo corpus, a random tiny Llama (launch/quickstart/tiny_llama.json), the
#     quickstart's PMoL-DPO config (3 groups x 2 experts + 1 empty, r = 8) cut to 20 steps
#     on that base, and the same run trained here on the CPU as the reference (in f32 and in bf16).
#   bash tests/gpu/run.sh run [DIR [STAGE...]]  (GPU machine, from the repository root)
#     runs the stages named (default all four, in this order; a device call is capped at 10
#     minutes, so give the slow ones calls of their own, e.g. `run gpu-suite tests e2e`,
#     then `run gpu-suite memcheck`, then `run gpu-suite racecheck`; a sanitizer stage can
#     be split further with gtest's GTEST_TOTAL_SHARDS / GTEST_SHARD_INDEX):
#     1. tests: every CUDA test binary: kernels against the CPU backend op by op, NCCL on one
#        GPU, a whole PMoL-DPO step's losses and gradients against the CPU path;
#     2. memcheck, 3. racecheck: compute-sanitizer with that tool on the kernel tests;
#     4. e2e: `pmol train` of the prepared run on the GPU: ZeRO stage 0, stage 1 (one rank, so
#        the world's copies move GPU buffers), and activation recompute. Each must finish,
#        and its logged losses must match the CPU run's within 1e-4 relative (f32 on both
#        sides). Rounding barely moves this run: on the CPU its f32 and f64 losses differ
#        by at most 2.1e-8 relative over the 20 steps, so 1e-4 leaves ~5000x room for the
#        GPU's summation orders while a wrong kernel or a lost gradient shows at 1e-3+.
#        Then in bf16 mixed precision (model.dtype=bf16), with and without recompute,
#        against the same run in bf16 on the CPU within 2e-3 relative: on the CPU the bf16
#        run's losses differ from the f32 run's by at most 2.5e-4 relative, and the GPU and
#        CPU round in different places (summation orders), so 2e-3 is 8x that distance.
#     It ends with "N passed, N failed" and exits non-zero when anything failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

pack() {
  local dir="${1:-gpu-suite}"
  set -e
  bazel build --config=cuda //tests/cuda:all //launch:pmol
  local stage
  stage="$(mktemp -d)/gpu-suite"
  # The GPU tests; the SIMT-emulation tests (*_emulated_test) run on the CPU in every build.
  local tests=()
  for t in bazel-bin/tests/cuda/*_test; do
    [[ "$t" == *_emulated_test ]] || tests+=("$t")
  done
  bash tests/cuda/run_on_gpu.sh pack "$stage" "${tests[@]}" bazel-bin/launch/pmol
  local pmol=bazel-bin/launch/pmol e2e="$stage/e2e"
  mkdir -p "$e2e"
  "$pmol" make-demo-data --out="$e2e/data" --seed=1 > /dev/null
  "$pmol" init-model --hf-config=launch/quickstart/tiny_llama.json --out="$e2e/base" --seed=1 > /dev/null
  # The quickstart's PMoL-DPO config, on the random base, shortened by e2e_flags.
  sed 's#QUICKSTART_DIR#E2E_DIR#g' launch/quickstart/dpo_pmol.textproto > "$e2e/dpo_pmol.textproto"
  e2e_config "$e2e" > "$e2e/cpu.textproto"
  "$pmol" train --config="$e2e/cpu.textproto" $(e2e_flags "$e2e") --set=output_dir="$e2e/cpu_reference" \
    --set=model.device=cpu
  cp "$e2e/cpu_reference/metrics.jsonl" "$e2e/cpu_metrics.jsonl"
  "$pmol" train --config="$e2e/cpu.textproto" $(e2e_flags "$e2e") --set=output_dir="$e2e/cpu_bf16_reference" \
    --set=model.device=cpu --set=model.dtype=bf16
  cp "$e2e/cpu_bf16_reference/metrics.jsonl" "$e2e/cpu_bf16_metrics.jsonl"
  rm -rf "$e2e/cpu_reference" "$e2e/cpu_bf16_reference" "$e2e/cpu.textproto"
  # One xz archive (~21 MB; unpacked ~95 MB, mostly OpenBLAS and ICU data), small enough
  # to travel with the working tree.
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$(dirname "$stage")" -cf - gpu-suite | xz -T0 -6 > "$dir/suite.tar.xz"
  rm -rf "$(dirname "$stage")"
  du -sh "$dir/suite.tar.xz"
  echo "packed into $dir/suite.tar.xz; on the GPU machine: bash tests/gpu/run.sh run $dir"
}

# Unpacks DIR/suite.tar.xz into DIR (once).
unpack() {
  local dir="$1"
  [[ -d "$dir/bin" ]] && return 0
  [[ -f "$dir/suite.tar.xz" ]] || { echo "tests/gpu/run.sh: no $dir/suite.tar.xz (run pack first)" >&2; exit 1; }
  xz -dc "$dir/suite.tar.xz" | tar -C "$dir" --strip-components=1 -xf -
}

# The run config with E2E_DIR set to the absolute path of $1.
e2e_config() {
  local abs
  abs="$(cd "$1" && pwd)"
  sed "s#E2E_DIR#$abs#g" "$1/dpo_pmol.textproto"
}

# The overrides that make the quickstart run the suite's: the random base in $1/base, 20
# steps, losses logged every 5.
e2e_flags() {
  local abs
  abs="$(cd "$1" && pwd)"
  echo "--set=model.path=$abs/base --set=optimizer.max_steps=20 --set=optimizer.warmup_steps=5" \
    "--set=logging.every_steps=5 --set=checkpoint.every_steps=10"
}

passed=0
failed=0
check() {  # check NAME COMMAND...: runs it, counts it
  local name="$1"
  shift
  echo "=== $name"
  if "$@"; then
    echo "--- PASS $name"
    passed=$((passed + 1))
  else
    echo "--- FAIL $name"
    failed=$((failed + 1))
  fi
}

# Compares the "train" losses of two metrics.jsonl files at every logged step, within a
# relative tolerance.
same_losses() {  # same_losses GPU_METRICS CPU_METRICS TOLERANCE
  python3 - "$1" "$2" "$3" << 'EOF'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r.get("split") == "train" and "loss/total" in r:
            out[r["step"]] = r["loss/total"]
    return out
got, want, tol = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
if not want or sorted(got) != sorted(want):
    sys.exit(f"logged steps differ: gpu {sorted(got)} cpu {sorted(want)}")
worst = max(abs(got[s] - want[s]) / max(abs(want[s]), 1e-3) for s in want)
for s in sorted(want):
    print(f"  step {s}: gpu loss {got[s]:.6f}  cpu loss {want[s]:.6f}")
print(f"  worst relative difference {worst:.2e} (tolerance {tol:g})")
sys.exit(0 if worst <= tol else 1)
EOF
}

train_on_gpu() {  # train_on_gpu DIR NAME CPU_METRICS TOLERANCE [--set=...]
  local dir="$1" name="$2" reference="$3" tolerance="$4"
  shift 4
  local e2e="$dir/e2e" out="$dir/e2e/gpu_$name"
  e2e_config "$e2e" > "$e2e/gpu_$name.textproto"
  rm -rf "$out"
  # shellcheck disable=SC2046  # e2e_flags is a list of words without spaces
  bash tests/cuda/run_on_gpu.sh exec "$dir" "$dir/bin/pmol" train --config="$e2e/gpu_$name.textproto" \
    $(e2e_flags "$e2e") --set=output_dir="$out" --set=model.device=cuda "$@" || return 1
  same_losses "$out/metrics.jsonl" "$e2e/$reference" "$tolerance"
}

run() {
  local dir="${1:-gpu-suite}"
  shift || true
  local stages=("$@")
  [[ ${#stages[@]} -gt 0 ]] || stages=(tests memcheck racecheck e2e)
  local stage
  for stage in "${stages[@]}"; do
    case "$stage" in
      tests | memcheck | racecheck | e2e) ;;
      *)
        echo "tests/gpu/run.sh: unknown stage '$stage' (tests, memcheck, racecheck, e2e)" >&2
        exit 2
        ;;
    esac
  done
  unpack "$dir"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for stage in "${stages[@]}"; do
    case "$stage" in
      tests) run_tests "$dir" ;;
      memcheck | racecheck) run_sanitizer "$dir" "$stage" ;;
      e2e) run_e2e "$dir" ;;
    esac
  done
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
}

run_tests() {
  local dir="$1" bin
  for bin in "$dir"/bin/*_test; do
    check "$(basename "$bin")" bash tests/cuda/run_on_gpu.sh exec "$dir" "$bin"
  done
}

run_sanitizer() {  # run_sanitizer DIR TOOL
  local dir="$1" tool="$2"
  if ! command -v compute-sanitizer > /dev/null; then
    echo "=== compute-sanitizer not found: $tool not run"
    failed=$((failed + 1))
    return
  fi
  local shard=""
  [[ -n "${GTEST_TOTAL_SHARDS:-}" ]] && shard=" (shard ${GTEST_SHARD_INDEX:-0} of $GTEST_TOTAL_SHARDS)"
  check "compute-sanitizer --tool $tool cuda_backend_test$shard" bash tests/cuda/run_on_gpu.sh exec "$dir" \
    compute-sanitizer --tool "$tool" --error-exitcode 1 "$dir/bin/cuda_backend_test"
}

run_e2e() {
  local dir="$1"
  local f32=(cpu_metrics.jsonl 1e-4) bf16=(cpu_bf16_metrics.jsonl 2e-3)
  check "pmol train on the GPU, ZeRO 0" train_on_gpu "$dir" zero0 "${f32[@]}"
  check "pmol train on the GPU, ZeRO 1 (one rank)" train_on_gpu "$dir" zero1 "${f32[@]}" \
    --set=parallel.zero_stage=1
  check "pmol train on the GPU, activation recompute" train_on_gpu "$dir" recompute "${f32[@]}" \
    --set=model.recompute_activations=true
  check "pmol train on the GPU, bf16 mixed precision" train_on_gpu "$dir" bf16 "${bf16[@]}" \
    --set=model.dtype=bf16
  check "pmol train on the GPU, bf16 with activation recompute" train_on_gpu "$dir" bf16_recompute \
    "${bf16[@]}" --set=model.dtype=bf16 --set=model.recompute_activations=true
}

case "${1:-}" in
  pack) pack "${2:-}" ;;
  run)
    shift
    run "$@"
    ;;
  *)
    sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

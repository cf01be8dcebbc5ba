#!/usr/bin/env bash
# benchmarks/train_benchmark on one GPU against PyTorch 2: built on a machine with Bazel and
# the CUDA toolkit, run on a GPU machine that has neither Bazel nor MPI (the CUDA 13
# runtime, a driver, and python3 with a CUDA build of PyTorch).
#
#   bash benchmarks/gpu_train_benchmark.sh pack [DIR]     (build machine; DIR defaults to
#     gpu-train-benchmark/, git-ignored)
#     builds `--config=cuda //benchmarks:train_benchmark` and packs it with the shared
#     libraries it needs (tests/cuda/run_on_gpu.sh pack), the PyTorch peer and the model
#     configs into one archive, DIR/bench.tar.xz.
#   bash benchmarks/gpu_train_benchmark.sh run [DIR] [train_benchmark flags...]
#     (GPU machine, from the repository root) unpacks DIR/bench.tar.xz once, runs
#     attention_benchmark --device=cuda (pmol's attention against SDPA alone, into
#     DIR/attention_benchmark.log; ATTENTION=0 skips it) and gemm_benchmark --device=cuda (a
#     decoder layer's GEMMs against PyTorch's, and the bias epilogue against Gemm + AddBias,
#     into DIR/gemm_benchmark.log; GEMM=0 skips it), then runs
#     train_benchmark --device=cuda (Qwen2.5-0.5B-shaped model, 4 pairs x 1024 tokens, 10
#     timed steps after 3 warm-up steps; rows pmol f32 / bf16 mixed precision, PyTorch f32 /
#     bf16 eager SDPA / bf16 torch.compile; see benchmarks/TRAIN_BENCHMARK.md). Extra flags override those
#     defaults (e.g. --steps=20, --profile). The output also goes to DIR/train_benchmark.log.
#     The peer runs with python3 (or $PYTHON), in the environment this script was started
#     in: the packed libraries are on LD_LIBRARY_PATH for train_benchmark only.
set -euo pipefail
cd "$(dirname "$0")/.."

pack() {
  local dir="${1:-gpu-train-benchmark}"
  bazel build --config=cuda //benchmarks:train_benchmark //benchmarks:attention_benchmark \
    //benchmarks:gemm_benchmark
  local stage
  stage="$(mktemp -d)/gpu-train-benchmark"
  bash tests/cuda/run_on_gpu.sh pack "$stage" bazel-bin/benchmarks/train_benchmark \
    bazel-bin/benchmarks/attention_benchmark bazel-bin/benchmarks/gemm_benchmark
  mkdir -p "$stage/benchmarks/peers" "$stage/benchmarks/configs"
  cp benchmarks/peers/torch_pmol_dpo_peer.py benchmarks/peers/torch_attention_peer.py \
    benchmarks/peers/torch_gemm_peer.py benchmarks/peers/peer_timing.py "$stage/benchmarks/peers/"
  cp benchmarks/configs/*.json "$stage/benchmarks/configs/"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$(dirname "$stage")" -cf - gpu-train-benchmark | xz -T0 -6 > "$dir/bench.tar.xz"
  rm -rf "$(dirname "$stage")"
  du -sh "$dir/bench.tar.xz"
  echo "packed into $dir/bench.tar.xz; on the GPU machine: bash benchmarks/gpu_train_benchmark.sh run $dir"
}

run() {
  local dir=gpu-train-benchmark
  if [[ $# -gt 0 && "$1" != -* ]]; then
    dir="$1"
    shift
  fi
  if [[ ! -d "$dir/bin" ]]; then
    [[ -f "$dir/bench.tar.xz" ]] || { echo "gpu_train_benchmark.sh: no $dir/bench.tar.xz (run pack first)" >&2; exit 1; }
    xz -dc "$dir/bench.tar.xz" | tar -C "$dir" --strip-components=1 -xf -
  fi
  local python="${PYTHON:-$(command -v python3)}"
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$python" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available:", torch.cuda.is_available())'
  # The peer's interpreter, started by train_benchmark: it gets back the LD_LIBRARY_PATH
  # of this shell, not the one run_on_gpu.sh sets for pmol's packed libraries.
  local wrapper="$dir/peer_python"
  cat > "$wrapper" << EOF
#!/usr/bin/env bash
if [[ -n "\${PEER_LD_LIBRARY_PATH:-}" ]]; then export LD_LIBRARY_PATH="\$PEER_LD_LIBRARY_PATH"; else unset LD_LIBRARY_PATH; fi
exec "$python" "\$@"
EOF
  chmod +x "$wrapper"
  export PEER_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
  # Attention alone first (Qwen2.5-0.5B's heads, 4 x 1024 tokens; bf16 and f32 against
  # SDPA), unless ATTENTION=0.
  if [[ "${ATTENTION:-1}" != 0 ]]; then
    bash tests/cuda/run_on_gpu.sh exec "$dir" "$dir/bin/attention_benchmark" --device=cuda \
      --python="$wrapper" --peer="$dir/benchmarks/peers/torch_attention_peer.py" 2>&1 |
      tee "$dir/attention_benchmark.log" || true
  fi
  # A decoder layer's GEMMs (cuBLASLt, the bias epilogue against Gemm + AddBias) against
  # PyTorch's, unless GEMM=0.
  if [[ "${GEMM:-1}" != 0 ]]; then
    bash tests/cuda/run_on_gpu.sh exec "$dir" "$dir/bin/gemm_benchmark" --device=cuda \
      --python="$wrapper" --peer="$dir/benchmarks/peers/torch_gemm_peer.py" 2>&1 |
      tee "$dir/gemm_benchmark.log" || true
  fi
  bash tests/cuda/run_on_gpu.sh exec "$dir" "$dir/bin/train_benchmark" --device=cuda \
    --python="$wrapper" --peer="$dir/benchmarks/peers/torch_pmol_dpo_peer.py" \
    --hf_config="$dir/benchmarks/configs/qwen2_5_0_5b.json" "$@" 2>&1 | tee "$dir/train_benchmark.log"
}

case "${1:-}" in
  pack) pack "${2:-}" ;;
  run)
    shift
    run "$@"
    ;;
  *)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

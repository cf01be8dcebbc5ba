#!/usr/bin/env bash
# The README's main-job command. Until `pmol train` exists (issue 5), the main job is
# the model benchmark: it installs what is missing, builds pmol, generates a ~20M-param
# Llama model (`pmol init-model`), runs `pmol forward` on it, and times forward+backward
# against the same model in PyTorch on this machine's cores, printing the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bazel build //launch:pmol //benchmarks:model_benchmark
out="${PMOL_QUICKSTART_DIR:-/tmp/pmol-quickstart}"
mkdir -p "$out"
./bazel-bin/launch/pmol init-model --hf-config=benchmarks/configs/llama_20m.json --out="$out/model" --seed=1
echo '[[1, 15, 300, 4000, 27, 9], [2, 8, 64, 512, 4096, 15999]]' > "$out/tokens.json"
./bazel-bin/launch/pmol forward --model="$out/model" --tokens="$out/tokens.json" --out="$out/logits.safetensors"
echo "forward: wrote $out/logits.safetensors"
./bazel-bin/benchmarks/model_benchmark --threads="$(nproc)" --workdir="$out/bench"

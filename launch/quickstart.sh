#!/usr/bin/env bash
# The README's main-job command: the PMoL paper's pipeline in miniature, on the embedded
# demo corpus, on this machine's CPU cores. Installs what is missing, builds pmol, then:
#   1. `pmol make-demo-data`: the corpus (3 preferences that agree in part and conflict in
#      part, an SFT split, held-out pairs) and its tokenizer; `pmol init-model`: a tiny
#      Llama (launch/quickstart/tiny_llama.json) from random init; `pmol train` SFT
#      (launch/quickstart/sft.textproto) on the SFT split;
#   2. `pmol train` DPO from the SFT model on the mixed preference data with PMoL, the LoRA
#      baseline of the same trainable budget and full fine-tuning
#      (launch/quickstart/dpo_{pmol,lora,full}.textproto);
#   3. `pmol report`: implicit-reward accuracy and margin per preference on the held-out
#      pairs for each method, PMoL's router mass per expert group per layer for each
#      preference's data, as a table here and as a self-contained HTML report with curves.
# Outputs go to $PMOL_QUICKSTART_DIR (default /tmp/pmol-quickstart). A run that is
# interrupted resumes from its checkpoints when the command is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bazel build //launch:pmol
pmol=./bazel-bin/launch/pmol
out="${PMOL_QUICKSTART_DIR:-/tmp/pmol-quickstart}"
mkdir -p "$out/configs"
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stamp "demo corpus and tokenizer"
"$pmol" make-demo-data --out="$out/data" --seed=1
if [ ! -f "$out/base0/model.safetensors" ]; then
  "$pmol" init-model --hf-config=launch/quickstart/tiny_llama.json --out="$out/base0" --seed=1
fi
for name in sft dpo_pmol dpo_lora dpo_full; do
  sed "s#QUICKSTART_DIR#$out#g" "launch/quickstart/$name.textproto" > "$out/configs/$name.textproto"
done

stamp "1. SFT of the tiny base from random init"
"$pmol" train --config="$out/configs/sft.textproto"
for method in pmol lora full; do
  stamp "2. DPO with $method"
  "$pmol" train --config="$out/configs/dpo_$method.textproto"
done

stamp "3. evaluation on held-out pairs"
"$pmol" report --run=PMoL="$out/dpo_pmol" --run=LoRA="$out/dpo_lora" --run=Full="$out/dpo_full" \
  --out="$out/report.html"
stamp "done: report in $out/report.html"

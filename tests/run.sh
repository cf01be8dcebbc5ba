#!/usr/bin/env bash
# The README's test command: installs what is missing, builds everything (CPU build,
# then the CUDA build, which must compile and link even without a GPU), runs every test
# and ends with the line "N passed, N failed" (test cases, from each target's XML).
set -uo pipefail
cd "$(dirname "$0")/.."

bash launch/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
# Independent tokenizer implementations (npm) for the parity tests; the tests fail with
# a clear message if this did not work.
oracles="${PMOL_ORACLE_DIR:-$HOME/.cache/pmol-oracles}"
bash tests/data/install_oracles.sh "$oracles" || echo "tokenizer oracles could not be installed into $oracles"
export PMOL_ORACLE_DIR="$oracles"

passed=0 failed=0 skipped=0
tally() {  # reads `bazel test` output on stdin
  read -r p f s < <(/usr/bin/python3 tests/count_results.py)
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

log=$(mktemp)
echo "== bazel test //... (CPU build)"
bazel test //... --test_env=PMOL_ORACLE_DIR 2>&1 | tee "$log" | grep -E '^(//|Executed|ERROR|FAIL)' || true
tally < "$log"

echo "== bazel build --config=cuda //... (CUDA must compile and link; no GPU needed)"
if bazel build --config=cuda //... >"$log" 2>&1; then
  echo "CUDA build: ok"
  # The SIMT-emulation tests ran in the CPU build already; the CUDA build does not change them.
  bazel test --config=cuda --test_tag_filters=-simt_emulation //tests/cuda/... 2>&1 | tee "$log" | grep -E '^(//|Executed|ERROR)' || true
  tally < "$log"
else
  grep -E 'ERROR|error' "$log" | head -20
  echo "CUDA build: FAILED"
  failed=$((failed + 1))
fi
rm -f "$log"

[ "$skipped" -gt 0 ] && echo "($skipped skipped: GPU-only checks on a machine without a GPU)"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

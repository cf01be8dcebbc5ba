# Shared set-up of the multi-rank benchmarks (sourced, not run): builds `pmol`, writes the
# demo data and a random model of a HF config into a work folder (kept between runs), and
# gives the command line that starts N ranks.
#
#   bench_setup NAME DEFAULT_WORK MODEL_CONFIG   sets $pmol and $work (PMOL_BENCH_DIR
#                                                 overrides the folder); exits on failure
#   bench_launch N                               sets the array $launch: `pmol` itself for
#                                                 N = 1, else mpirun -np N pmol

bench_setup() {  # name default_work model_config
  local name=$1 model_config=$3
  command -v mpirun >/dev/null || { echo "$name: mpirun not found (bash launch/setup.sh)" >&2; exit 1; }
  bazel build //launch:pmol >/dev/null 2>&1 || { echo "$name: bazel build //launch:pmol failed" >&2; exit 1; }
  pmol=$(pwd)/bazel-bin/launch/pmol
  work=${PMOL_BENCH_DIR:-$2}
  mkdir -p "$work"
  [ -f "$work/data/tokenizer.json" ] || "$pmol" make-demo-data --out="$work/data" --seed=1 >/dev/null
  [ -f "$work/model/model.safetensors" ] ||
    "$pmol" init-model --hf-config="$model_config" --out="$work/model" --seed=1 --dtype=f32 >/dev/null
}

bench_launch() {  # ranks
  launch=("$pmol")
  if [ "$1" -gt 1 ]; then
    launch=(mpirun --oversubscribe --bind-to none --mca btl self,vader,tcp -np "$1" "$pmol")
    [ "$(id -u)" -eq 0 ] && launch=(mpirun --allow-run-as-root "${launch[@]:1}")
  fi
  return 0
}

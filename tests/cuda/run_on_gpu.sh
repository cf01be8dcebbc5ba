#!/usr/bin/env bash
# Runs the CUDA tests on a GPU machine that has the CUDA 13 runtime but no Bazel.
#
#   On the build machine (after `bazel build --config=cuda //tests/cuda:all`):
#     tests/cuda/run_on_gpu.sh pack DIR [BINARY...]
#   copies the test binaries (default: every tests/cuda/*_test in bazel-bin) to DIR/bin
#   and every shared library they need that is neither part of glibc nor part of CUDA
#   (Abseil, OpenBLAS, gfortran, libstdc++, ...; found with ldd) to DIR/lib.
#
#   On the GPU machine:
#     tests/cuda/run_on_gpu.sh run DIR [gtest flags...]
#   runs every test binary (DIR/bin/*_test) with LD_LIBRARY_PATH = DIR/lib plus the directories
#   that hold the CUDA libraries there (/usr/local/cuda*/lib64, or the nvidia/*/lib
#   folders of a pip-installed PyTorch), and exits non-zero if any test fails.
#     tests/cuda/run_on_gpu.sh exec DIR COMMAND [ARGS...]
#   runs one command (a packed binary, or a tool such as compute-sanitizer wrapping one)
#   with that same LD_LIBRARY_PATH, and exits with its status.
#
# The binaries link pmol's own libraries statically (linkstatic) and carry a RUNPATH of
# /usr/local/cuda/lib64; libcudart/libcublas/libcublasLt are not copied (the cuBLAS
# libraries alone are ~700 MB): the GPU machine must provide CUDA 13 versions of them.
set -euo pipefail

usage() {
  sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# Libraries the GPU machine provides itself: glibc's and the CUDA toolkit's/driver's.
is_provided() {
  case "$1" in
    linux-vdso.so* | ld-linux*.so* | libc.so* | libm.so* | libpthread.so* | libdl.so* | \
      librt.so* | libresolv.so* | libutil.so*) return 0 ;;
    libcuda.so* | libcudart.so* | libcublas.so* | libcublasLt.so* | libnccl.so* | \
      libcudnn*.so* | libnvidia-*.so* | libnvJitLink.so*) return 0 ;;
  esac
  return 1
}

pack() {
  local out="$1"
  shift
  local binaries=("$@")
  if [[ ${#binaries[@]} -eq 0 ]]; then
    binaries=(bazel-bin/tests/cuda/*_test)
  fi
  mkdir -p "$out/bin" "$out/lib"
  local bin lib name path
  for bin in "${binaries[@]}"; do
    [[ -x "$bin" ]] || { echo "run_on_gpu.sh: no executable $bin (build it first)" >&2; exit 1; }
    cp -f "$bin" "$out/bin/"
    chmod u+w "$out/bin/$(basename "$bin")"
    while read -r name path; do
      name="$(basename "$name")"
      is_provided "$name" && continue
      [[ -n "$path" && -f "$path" ]] || { echo "run_on_gpu.sh: $bin needs $name, not found" >&2; exit 1; }
      cp -fL "$path" "$out/lib/$name"
    done < <(ldd "$bin" | awk '/=>/ {print $1, $3} !/=>/ {print $1, ""}')
  done
  echo "packed into $out:"
  ls -la "$out/bin" "$out/lib"
  du -sh "$out"
}

cuda_lib_dirs() {
  local dirs=() d site
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu; do
    [[ -d "$d" ]] && dirs+=("$d")
  done
  # pip wheels (PyTorch): site-packages/nvidia/<component>/lib
  for py in python3 /usr/bin/python3; do
    command -v "$py" > /dev/null 2>&1 || continue
    for site in $("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2> /dev/null); do
      for d in "$site"/nvidia/*/lib "$site"/nvidia/*/*/lib; do
        [[ -d "$d" ]] && dirs+=("$d")
      done
    done
    break
  done
  local IFS=:
  echo "${dirs[*]}"
}

use_libraries() {
  local dir="$1"
  [[ -d "$dir/bin" ]] || { echo "run_on_gpu.sh: $dir/bin does not exist (pack first)" >&2; exit 1; }
  local lib_path
  lib_path="$(cd "$dir/lib" && pwd):$(cuda_lib_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$lib_path"
}

exec_one() {
  use_libraries "$1"
  shift
  exec "$@"
}

run() {
  local dir="$1"
  shift
  use_libraries "$dir"
  command -v nvidia-smi > /dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
  local failed=0 bin
  for bin in "$dir"/bin/*_test; do
    if ldd "$bin" | grep -q "not found"; then
      echo "run_on_gpu.sh: $bin has unresolved libraries with LD_LIBRARY_PATH=$LD_LIBRARY_PATH:" >&2
      ldd "$bin" | grep "not found" >&2
      failed=1
      continue
    fi
    echo "=== $bin"
    if ! "$bin" "$@"; then
      failed=1
    fi
  done
  if [[ $failed -ne 0 ]]; then
    echo "run_on_gpu.sh: FAILED" >&2
    exit 1
  fi
  echo "run_on_gpu.sh: all passed"
}

[[ $# -ge 2 ]] || usage
command="$1"
shift
case "$command" in
  pack) pack "$@" ;;
  run) run "$@" ;;
  exec) exec_one "$@" ;;
  *) usage ;;
esac

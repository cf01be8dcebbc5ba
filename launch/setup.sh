#!/usr/bin/env bash
# Installs what pmol needs to build and test on Debian 12, skipping what is present:
# Bazel 4 (offline workspace), compilers' libraries (protobuf, Abseil, gflags,
# GoogleTest, OpenBLAS, Open MPI, nlohmann-json, PCRE2, ICU, Google Benchmark) and, for the
# oracle tests and peer benchmarks, Debian's PyTorch and NumPy, and for the Slurm test
# (tests/slurm, launch/slurm/local_cluster.sh) Slurm and munge. Uses sudo when not root.
set -euo pipefail

packages=(
  bazel-bootstrap g++ openmpi-bin libopenmpi-dev protobuf-compiler libprotobuf-dev
  libabsl-dev libgflags-dev libgtest-dev libgmock-dev libopenblas-dev nlohmann-json3-dev
  libpcre2-dev libicu-dev libbenchmark-dev python3-torch python3-numpy
  # Slurm's daemons and clients and munge. Slurm's PMIx plugin (srun --mpi=pmix, in
  # slurm-wlm-basic-plugins) loads pmix2/lib/libpmix.so, which only libpmix-dev ships;
  # local_cluster.sh finds free ports with ss (iproute2).
  slurm-wlm munge libpmix-dev iproute2
)
# Node.js runs the independent tokenizer oracles; a preinstalled Node 20 will do.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

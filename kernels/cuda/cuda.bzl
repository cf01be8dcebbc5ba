"""nvcc compilation for Bazel 4, which has no CUDA rules.

cuda_object() compiles one .cu file into a position-independent object file with the
toolkit's nvcc (/usr/local/cuda, g++ as host compiler) for sm_90 (plus compute_90 PTX,
so newer GPUs can JIT it). The genrule is tagged manual: it is built only when a target
that is selected under --config=cuda depends on it, never by a plain `bazel build //...`.
"""

NVCC = "/usr/local/cuda/bin/nvcc"

NVCC_FLAGS = [
    "-std=c++20",
    "-O3",
    "-Xcompiler",
    "-fPIC",
    "-gencode arch=compute_90,code=sm_90",
    "-gencode arch=compute_90,code=compute_90",
    "-I.",
    "-I$(GENDIR)",
    "-isystem /usr/lib/x86_64-linux-gnu",
]

def cuda_object(name, src, hdrs):
    """Compiles `src` (.cu) to `<name>.o`; `hdrs` are every header it includes."""
    native.genrule(
        name = name,
        srcs = [src] + hdrs,
        outs = [name + ".o"],
        cmd = "%s %s -c $(location %s) -o $@" % (NVCC, " ".join(NVCC_FLAGS), src),
        message = "nvcc " + src,
        tags = ["manual"],
    )

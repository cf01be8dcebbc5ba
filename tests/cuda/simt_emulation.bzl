"""SIMT-emulation tests, each run three ways: forward schedule, reverse schedule, memcheck.

simt_emulation/simt_emulation.h runs a block's threads one after another between barriers:
round robin in index order by default, so a kernel with a missing barrier can still pass
(each writer happens to run before its readers, or the warps move almost in step). The
reverse schedule (PMOL_SIMT_SCHEDULE=reverse) lets the last warp run ahead to each block
barrier, runs blocks last to first and lands cp.async copies at their issue, so such a race
reads stale shared memory or the 0xff fill there. A correct kernel gives the same results
under both, since CUDA orders nothing between two barriers.

The memcheck twin is built with AddressSanitizer, the emulated backend with it
(:emulated_cuda_backend_memcheck in place of :emulated_cuda_backend): an emulated device
buffer is a heap block whose bytes past the size asked for are poisoned, as is the dynamic
shared memory past the launch's bytes, so a kernel that reads or writes outside them, or a
buffer after its free, stops the test with AddressSanitizer's report: what compute-sanitizer's
memcheck reports on a GPU, for the kernels' logic.
"""

MEMCHECK_COPTS = ["-fsanitize=address", "-fno-omit-frame-pointer"]

def emulated_cuda_backend(name, copts = []):
    """The emulated CUDA backend: cuda_backend.cc and the rewritten kernels on the emulation.

    Empty in a --config=cuda build, which links the real backend instead.
    """
    native.cc_library(
        name = name,
        testonly = True,
        srcs = select({
            "//:cuda": [],
            "//conditions:default": [
                ":emulated_kernel_sources",
                "//kernels/cuda:cuda_backend.cc",
                "simt_emulation/cublas_lt_on_cpu.cc",
            ],
        }),
        alwayslink = True,  # the backend registers itself with GetBackend
        copts = ["-Wno-unknown-pragmas"] + copts,  # the kernels' #pragma unroll
        local_defines = ["PMOL_CUDA_SIMT_EMULATION=1"],
        deps = select({
            "//:cuda": [],
            "//conditions:default": [
                ":simt_emulation",
                "//kernels",
                "//kernels:backend_factories",
                "//kernels:backend_interface",
                "//kernels:dtype",
                "//kernels:random_bits",
                "//kernels:router_loss_math",
                "//kernels/cpu",
                "//kernels/cuda:device_code",
                "//third_party:absl",
            ],
        }),
    )

def emulated_cc_test(name, deps, copts = [], linkopts = [], **kwargs):
    """cc_test `name` (which ends in _emulated_test) and its two twins.

    `<base>_reverse_emulated_test`: the same test with PMOL_SIMT_SCHEDULE=reverse.
    `<base>_memcheck_emulated_test`: the same test under AddressSanitizer, with
    :emulated_cuda_backend (if it is a dep) swapped for :emulated_cuda_backend_memcheck.
    All three names end in _emulated_test, which tests/gpu/run.sh leaves out of the GPU suite.
    """
    suffix = "_emulated_test"
    if not name.endswith(suffix):
        fail("emulated_cc_test: '%s' must end in %s" % (name, suffix))
    if "env" in kwargs:
        fail("emulated_cc_test: '%s' sets env; the schedule is the macro's" % name)
    base = name[:-len(suffix)]
    native.cc_test(name = name, deps = deps, copts = copts, linkopts = linkopts, **kwargs)
    native.cc_test(
        name = base + "_reverse" + suffix,
        deps = deps,
        copts = copts,
        linkopts = linkopts,
        env = {"PMOL_SIMT_SCHEDULE": "reverse"},
        **kwargs
    )
    native.cc_test(
        name = base + "_memcheck" + suffix,
        deps = [":emulated_cuda_backend_memcheck" if d == ":emulated_cuda_backend" else d for d in deps],
        copts = copts + MEMCHECK_COPTS,
        linkopts = linkopts + ["-fsanitize=address"],
        # Leaks are not what memcheck looks for (nor LeakSanitizer's stop-the-world in a sandbox).
        env = {"ASAN_OPTIONS": "detect_leaks=0"},
        **kwargs
    )

"""SIMT-emulation tests run twice: under the emulation's forward schedule and its reverse one.

simt_emulation/simt_emulation.h runs a block's threads one after another between barriers,
in index order, and blocks in grid order. A kernel with a missing barrier can still pass in
that order (each writer happens to run before its readers); the reverse schedule
(PMOL_SIMT_SCHEDULE=reverse) runs the last thread and the last block first, so such a race
reads stale shared memory or the 0xff fill there. A correct kernel gives the same results
under both, since CUDA orders nothing between two barriers.
"""

def emulated_cc_test(name, **kwargs):
    """cc_test `name` (which ends in _emulated_test) and its reverse-schedule twin.

    The twin is `<base>_reverse_emulated_test`: same sources, deps and shards, with
    PMOL_SIMT_SCHEDULE=reverse in its environment. Both names end in _emulated_test, which
    tests/gpu/run.sh leaves out of the GPU suite.
    """
    suffix = "_emulated_test"
    if not name.endswith(suffix):
        fail("emulated_cc_test: '%s' must end in %s" % (name, suffix))
    if "env" in kwargs:
        fail("emulated_cc_test: '%s' sets env; the schedule is the macro's" % name)
    native.cc_test(name = name, **kwargs)
    native.cc_test(
        name = name[:-len(suffix)] + "_reverse" + suffix,
        env = {"PMOL_SIMT_SCHEDULE": "reverse"},
        **kwargs
    )

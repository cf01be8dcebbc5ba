#!/usr/bin/env python3
"""Rewrites a CUDA source for the CPU emulation (simt_emulation.h).

Every kernel launch statement

    Kernel<T><<<grid, block, shared, stream>>>(args);

becomes

    ::simt::LaunchKernel({grid, block, shared, stream}, [&] { Kernel<T>(args); });

(the launch configuration and arguments may span lines; the kernel expression is what
precedes `<<<` on its line). `#include "kernels/cuda/X"` lines naming a header in
--rewritten (headers that themselves launch kernels and were rewritten too) point at the
rewritten copy. Nothing else changes, so the emulated code is the product's code.

Usage: emulate_launches.py IN OUT [--rewritten=kernels/cuda/a.cuh=path/to/a.cuh,...]
"""
import re
import sys


def matching(text, start, open_char, close_char):
    """Index just past the bracket that closes text[start] (an open_char)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError("unbalanced %s at offset %d" % (open_char, start))


def rewrite_launches(text):
    """The text with every launch rewritten, and how many there were."""
    out = []
    pos = 0
    launches = 0
    while True:
        at = text.find("<<<", pos)
        if at < 0:
            out.append(text[pos:])
            return "".join(out), launches
        line_start = text.rfind("\n", 0, at) + 1
        kernel = text[line_start:at].strip()
        if not re.fullmatch(r"[A-Za-z_][\w:]*(<[^;{}]*>)?", kernel):
            raise ValueError("cannot parse the kernel before <<< at offset %d: %r" % (at, kernel))
        config_end = text.find(">>>", at)
        config = text[at + 3:config_end]
        args_start = config_end + 3
        if text[args_start] != "(":
            raise ValueError("expected ( after >>> at offset %d" % args_start)
        args_end = matching(text, args_start, "(", ")")
        if text[args_end] != ";":
            raise ValueError("expected ; after the launch at offset %d" % args_end)
        indent = text[line_start:at][: len(text[line_start:at]) - len(text[line_start:at].lstrip())]
        out.append(text[pos:line_start])
        out.append("%s::simt::LaunchKernel({%s}, [&] { %s%s; });"
                   % (indent, config, kernel, text[args_start:args_end]))
        pos = args_end + 1
        launches += 1


def main():
    src, dst = sys.argv[1], sys.argv[2]
    rewritten = {}
    for arg in sys.argv[3:]:
        if arg.startswith("--rewritten="):
            for pair in filter(None, arg[len("--rewritten="):].split(",")):
                original, copy = pair.split("=")
                rewritten[original] = copy
    with open(src) as f:
        text = f.read()
    text, launches = rewrite_launches(text)
    for original, copy in rewritten.items():
        text = text.replace('#include "%s"' % original, '#include "%s"' % copy)
    with open(dst, "w") as f:
        f.write("// Generated from %s by emulate_launches.py (%d launches rewritten).\n"
                % (src, launches))
        f.write(text)


if __name__ == "__main__":
    main()

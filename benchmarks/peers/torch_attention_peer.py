#!/usr/bin/python3
"""PyTorch peer for benchmarks/attention_benchmark: causal grouped-query attention, forward
and forward + backward, timed the way a PyTorch user runs it.

Attention: F.scaled_dot_product_attention(q, k, v, is_causal=True) in PyTorch >= 2 (on an
H100 in bf16 PyTorch picks its FlashAttention-2 kernel); GQA through enable_gqa=True where
PyTorch has it, else k and v repeated per query head once, outside the timing. Older
PyTorch (Debian's 1.13, no SDPA): the eager form softmax(q k^T * scale + causal mask) v.
Layout [B, H, T, D], the one SDPA wants (pmol's is [B, T, H, D]; each side uses its own).
Inputs uniform in [-2, 2) (q, k) and [-1, 1) (v, the output gradient), as pmol's.

--sdpa_backend cudnn|flash|efficient forces one SDPA kernel (torch.nn.attention.sdpa_kernel):
cuDNN's fused attention is how pmol's kernels are compared with cuDNN's. A kernel that
cannot run these inputs (flash in f32, say) makes the peer fail, and its row says so.

Usage: torch_attention_peer.py --batch B --seq T --q_heads HQ --kv_heads HKV --head_dim D
                               --dtype bf16|float32 --device cpu|cuda --iters N --warmup W
                               [--sdpa_backend default|cudnn|flash|efficient]
Prints one JSON line: {"torch", "device", "attention", "forward_ms", "forward_backward_ms",
"peak_bytes"} (times per call, synchronised; peak_bytes of the forward + backward on cuda,
0 on cpu).
"""
import argparse
import contextlib
import json
import sys

import torch
import torch.nn.functional as F

from peer_timing import ms_per_call


def main():
    ap = argparse.ArgumentParser()
    for name in ("batch", "seq", "q_heads", "kv_heads", "head_dim", "iters", "warmup"):
        ap.add_argument("--" + name, type=int, required=True)
    ap.add_argument("--dtype", choices=("bf16", "float32"), required=True)
    ap.add_argument("--device", choices=("cpu", "cuda"), required=True)
    ap.add_argument("--sdpa_backend", choices=("default", "cudnn", "flash", "efficient"),
                    default="default")
    a = ap.parse_args()
    # One SDPA implementation forced (torch.nn.attention.sdpa_kernel, PyTorch >= 2.3):
    # cuDNN's fused attention, FlashAttention-2 or the memory-efficient kernel; "default"
    # lets PyTorch choose.
    backend_context = contextlib.nullcontext
    if a.sdpa_backend != "default":
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:
            sys.exit(f"--sdpa_backend {a.sdpa_backend}: this PyTorch {torch.__version__} has "
                     "no torch.nn.attention.sdpa_kernel")
        chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                  "efficient": SDPBackend.EFFICIENT_ATTENTION}[a.sdpa_backend]
        backend_context = lambda: sdpa_kernel(chosen)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    group = a.q_heads // a.kv_heads

    def uniform(heads, lo, hi):
        t = torch.empty(a.batch, heads, a.seq, a.head_dim, device=device, dtype=torch.float32)
        return t.uniform_(lo, hi).to(dtype)

    q = uniform(a.q_heads, -2.0, 2.0).requires_grad_()
    k = uniform(a.kv_heads, -2.0, 2.0).requires_grad_()
    v = uniform(a.kv_heads, -1.0, 1.0).requires_grad_()
    dout = uniform(a.q_heads, -1.0, 1.0)
    scale = a.head_dim ** -0.5
    sdpa = hasattr(F, "scaled_dot_product_attention")
    gqa = False
    if sdpa and group > 1:
        try:
            with backend_context():
                F.scaled_dot_product_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2],
                                               is_causal=True, enable_gqa=True)
            gqa = True
        except (TypeError, RuntimeError):  # no enable_gqa, or not in the forced kernel
            gqa = False
    if group > 1 and not gqa:  # repeated once, outside the timing, in favour of the peer
        k_in = k.detach().repeat_interleave(group, dim=1).requires_grad_()
        v_in = v.detach().repeat_interleave(group, dim=1).requires_grad_()
    else:
        k_in, v_in = k, v
    mask = None
    if not sdpa:
        mask = torch.full((a.seq, a.seq), float("-inf"), device=device).triu(1).to(dtype)

    def attention():
        if sdpa:
            if gqa:
                return F.scaled_dot_product_attention(q, k_in, v_in, is_causal=True,
                                                      enable_gqa=True)
            return F.scaled_dot_product_attention(q, k_in, v_in, is_causal=True)
        s = torch.matmul(q, k_in.transpose(-1, -2)) * scale + mask
        return torch.matmul(torch.softmax(s.float(), dim=-1).to(dtype), v_in)

    def timed(fn):
        return ms_per_call(fn, a.iters, a.warmup, a.device)

    def forward():
        with torch.no_grad(), backend_context():
            attention()

    def forward_backward():
        with backend_context():
            out = attention()
            torch.autograd.backward(out, dout)
        q.grad = k_in.grad = v_in.grad = None

    forward_ms = timed(forward)
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    forward_backward_ms = timed(forward_backward)
    peak = torch.cuda.max_memory_allocated() if a.device == "cuda" else 0
    kind = ("sdpa" + ("" if a.sdpa_backend == "default" else " " + a.sdpa_backend) +
            (" (enable_gqa)" if gqa else "")) if sdpa else "eager"
    print(json.dumps({"torch": torch.__version__, "device": a.device, "attention": kind,
                      "forward_ms": forward_ms, "forward_backward_ms": forward_backward_ms,
                      "peak_bytes": peak}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch peer for benchmarks/gemm_benchmark: the same GEMMs, written the way PyTorch runs
them in a training step, timed per call.

Each case is C[m,n] (+)= op(A) op(B) (+ bias) with row-major tensors:
  ta=0, tb=1 (a linear layer's forward, B the weight [n,k]): F.linear(a, b, bias), or
    c.addmm_(a, b.t()) when it accumulates;
  ta=0, tb=0 (dx = dy W): torch.mm(a, b), or c.addmm_(a, b);
  ta=1, tb=0 (a weight gradient dW = dy^T x): torch.mm(a.t(), b) (in the parameter's
    dtype, as autograd writes it).
F.linear and addmm go through cuBLASLt on CUDA (with its bias epilogue where PyTorch
uses it). TF32 is off, as in pmol's f32.

Usage: torch_gemm_peer.py --dtype bf16|f32 --device cpu|cuda --iters N --warmup W
                          --cases '[{"m":..,"n":..,"k":..,"trans_a":..,"trans_b":..,
                                     "accumulate":..,"bias":..}, ...]'
Prints one JSON line: {"torch": version, "device": name, "ms": [time per call, per case]}.
"""
import argparse
import json

import torch
import torch.nn.functional as F

from peer_timing import ms_per_call


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=("bf16", "f32"), required=True)
    ap.add_argument("--device", choices=("cpu", "cuda"), required=True)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--cases", required=True)
    a = ap.parse_args()
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)

    def rand(*shape):
        return torch.empty(*shape, device=device, dtype=torch.float32).uniform_(-1, 1).to(dtype)

    results = []
    with torch.no_grad():
        for case in json.loads(a.cases):
            m, n, k = case["m"], case["n"], case["k"]
            ta, tb = case["trans_a"], case["trans_b"]
            a_t = rand(k, m) if ta else rand(m, k)
            b_t = rand(n, k) if tb else rand(k, n)
            bias = rand(n) if case["bias"] else None
            c = rand(m, n)
            op_a = a_t.t() if ta else a_t
            if tb and not case["accumulate"]:
                fn = lambda: F.linear(op_a, b_t, bias)
            else:
                op_b = b_t.t() if tb else b_t
                if case["accumulate"]:
                    fn = lambda: c.addmm_(op_a, op_b)
                else:
                    fn = lambda: torch.mm(op_a, op_b)
            results.append(ms_per_call(fn, a.iters, a.warmup, a.device))
            del a_t, b_t, bias, c
    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(json.dumps({"torch": torch.__version__, "device": name, "ms": results}))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch peer for benchmarks/model_benchmark: the same Llama-family model, written the
way PyTorch users run it (HF-style modules: matmul attention with a causal mask, since
Debian's torch 1.13 has no fused SDPA), float32, timed on forward + backward.

Usage: torch_llama_peer.py MODEL_DIR BATCH SEQ THREADS STEPS MODE(frozen|full)
Prints one JSON line: {"tokens_per_s": ..., "seconds_per_step": ..., "peak_rss_mb": ...}.
"frozen": weights frozen, gradient taken at the embedding output (what adapters need);
"full": every weight gets a gradient too.
Debian's torch runs its GEMMs on OpenBLAS's own thread pool, which torch.set_num_threads does
not limit: THREADS also limits that pool (OPENBLAS_NUM_THREADS, set before torch is imported)
and OpenMP threads sleep when idle (OMP_WAIT_POLICY=PASSIVE), as pmol does; otherwise the two
pools spin on the same cores and PyTorch runs about 2.5x slower than it can.
"""
import os
import sys

if __name__ == "__main__" and len(sys.argv) > 4:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", sys.argv[4])
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import math
import resource
import time

import torch
import torch.nn.functional as F

from torch_pmol_dpo_peer import read_safetensors  # the peers' one safetensors reader


class Llama(torch.nn.Module):
    def __init__(self, cfg, weights):
        super().__init__()
        self.cfg = cfg
        self.w = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v) for k, v in weights.items()})
        hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, hd, 2).float() / hd))
        self.inv = inv
        self.hd = hd

    def p(self, name):
        return self.w[name.replace(".", "__")]

    def norm(self, x, name):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.p(name) * (x * torch.rsqrt(var + self.cfg.get("rms_norm_eps", 1e-6)))

    def forward(self, x):
        cfg, hd = self.cfg, self.hd
        B, T, _ = x.shape
        nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        ang = torch.arange(T).float()[:, None] * self.inv[None, :]
        emb = torch.cat((ang, ang), -1)
        cos, sin = emb.cos(), emb.sin()
        mask = torch.full((T, T), float("-inf")).triu(1)

        def rot(t):
            h = t.shape[-1] // 2
            return torch.cat((-t[..., h:], t[..., :h]), -1)

        for i in range(cfg["num_hidden_layers"]):
            pre = f"model.layers.{i}."
            h = self.norm(x, pre + "input_layernorm.weight")
            q = F.linear(h, self.p(pre + "self_attn.q_proj.weight")).view(B, T, nh, hd).transpose(1, 2)
            k = F.linear(h, self.p(pre + "self_attn.k_proj.weight")).view(B, T, nkv, hd).transpose(1, 2)
            v = F.linear(h, self.p(pre + "self_attn.v_proj.weight")).view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            k = k.repeat_interleave(nh // nkv, 1)
            v = v.repeat_interleave(nh // nkv, 1)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
            x = x + F.linear(a.transpose(1, 2).reshape(B, T, nh * hd), self.p(pre + "self_attn.o_proj.weight"))
            h = self.norm(x, pre + "post_attention_layernorm.weight")
            g = F.linear(h, self.p(pre + "mlp.gate_proj.weight"))
            u = F.linear(h, self.p(pre + "mlp.up_proj.weight"))
            x = x + F.linear(F.silu(g) * u, self.p(pre + "mlp.down_proj.weight"))
        x = self.norm(x, "model.norm.weight")
        head = self.p("model.embed_tokens.weight") if cfg.get("tie_word_embeddings") else self.p("lm_head.weight")
        return F.linear(x, head)


def main():
    model_dir, batch, seq, threads, steps, mode = sys.argv[1:7]
    batch, seq, threads, steps = int(batch), int(seq), int(threads), int(steps)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(model_dir + "/config.json") as f:
        cfg = json.load(f)
    model = Llama(cfg, read_safetensors(model_dir + "/model.safetensors", torch.float32))
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    ids = torch.randint(0, cfg["vocab_size"], (batch, seq))
    cot = torch.randn(batch, seq, cfg["vocab_size"])

    def step():
        x = F.embedding(ids, model.p("model.embed_tokens.weight")).detach().requires_grad_(True)
        logits = model(x)
        logits.backward(cot)
        return x.grad

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        step()
    elapsed = (time.perf_counter() - start) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"tokens_per_s": batch * seq / elapsed, "seconds_per_step": elapsed, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main()

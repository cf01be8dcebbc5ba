#!/usr/bin/python3
"""Independent PyTorch reference of a Llama-family decoder, for pmol's oracle tests.

Written from the Hugging Face modeling semantics (LlamaForCausalLM / Qwen2 / Mistral):
RMSNorm with eps inside the root, rotate_half RoPE with default/linear/llama3 frequency
scaling, grouped-query causal attention (kv head i serves query heads i*g .. i*g+g-1),
SwiGLU MLP, optional q/k/v/o and MLP biases, tied or untied LM head. Runs in float64
with autograd; nothing here is shared with the C++ code under test.

Usage: torch_llama.py JOBS.json, where JOBS.json is a list of
  {"model": DIR, "tokens": [[ids]...], "cotangent": FILE|null, "out": FILE}
For each job it writes to "out" a safetensors file with F64 `logits` and, when a
cotangent tensor `cotangent` [rows, len, vocab] is given, the gradients of
sum(logits * cotangent): `grad/inputs_embeds` (at the embedding output) and
`grad/<weight name>` for every weight.
"""
import json
import math
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[base + b: base + end]
        if e["dtype"] == "BF16":
            u16 = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=DTYPES[e["dtype"]])
        out[name] = torch.from_numpy(arr.astype(np.float64).reshape(e["shape"]))
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().contiguous().numpy().astype(np.float64).tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def inv_freq(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        return torch.where(medium, smoothed, scaled)
    return inv


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def linear(x, W, prefix, name):
    y = x @ W[f"{prefix}{name}.weight"].T
    bias = W.get(f"{prefix}{name}.bias")
    return y if bias is None else y + bias


def forward(cfg, W, ids):
    B, T = ids.shape
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg.get("rms_norm_eps", 1e-6)
    pos = torch.arange(T, dtype=torch.float64)
    ang = pos[:, None] * inv_freq(cfg, hd)[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x0 = torch.nn.functional.embedding(ids, W["model.embed_tokens.weight"])
    x0.retain_grad()
    x = x0
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        q = linear(h, W, p, "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = linear(h, W, p, "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = linear(h, W, p, "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, dim=-1)
        a = (att @ v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + linear(a, W, p, "self_attn.o_proj")
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        g = linear(h, W, p, "mlp.gate_proj")
        u = linear(h, W, p, "mlp.up_proj")
        x = x + linear(torch.nn.functional.silu(g) * u, W, p, "mlp.down_proj")
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T, x0


def run(job):
    with open(job["model"] + "/config.json") as f:
        cfg = json.load(f)
    W = read_safetensors(job["model"] + "/model.safetensors")
    for t in W.values():
        t.requires_grad_(True)
    ids = torch.tensor(job["tokens"], dtype=torch.long)
    logits, x0 = forward(cfg, W, ids)
    out = {"logits": logits}
    if job.get("cotangent"):
        ct = read_safetensors(job["cotangent"])["cotangent"]
        (logits * ct).sum().backward()
        out["grad/inputs_embeds"] = x0.grad.reshape(-1, x0.shape[-1])
        for name, t in W.items():
            out["grad/" + name] = t.grad
    write_safetensors(job["out"], out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run(job)

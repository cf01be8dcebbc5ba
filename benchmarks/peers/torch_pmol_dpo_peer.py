#!/usr/bin/python3
"""PyTorch peer for benchmarks/train_benchmark: one PMoL-DPO training step written the way
a PyTorch + PEFT user writes it for speed, computing the same math as pmol (DESIGN.md
section 1; tests/oracles/torch_pmol.py is its float64 oracle):

  policy forward + backward on the [2B, T] batch (chosen rows, then rejected rows),
  reference forward with the adapters off under torch.no_grad(),
  L = L_dpo(sigmoid) + group_weight * L_group + balance_weight * L_bal,
  torch.nn.utils.clip_grad_norm_, torch.optim.AdamW (routers in a no-decay group unless
  decay_routers) with a LambdaLR schedule equal to pmol's (constant / linear / cosine,
  warmup, min_lr_ratio).

Model: float32, HF Llama semantics (RMSNorm, rotate_half RoPE, GQA, SwiGLU), eager
attention as HF's LlamaAttention without SDPA (Debian's torch 1.13 has no
F.scaled_dot_product_attention): softmax(q k^T / sqrt(d) + causal mask) v. Logits for
every position, as HF's LlamaForCausalLM returns them.
PMoL adapted linear (every targeted module), experts STACKED as in pmol:
  g = softmax(x W_r^T / tau);  h = x A_all^T (one GEMM);
  y = x W0^T + hs B_all^T (one GEMM), hs = h viewed [N, E, r] * (g[:, :E] alpha/r)[:, :, None].
Router probabilities of all modules are stacked for the auxiliary losses:
  L_group: over positions whose token is a response token, m_k = sum_{i in G_k} g_i /
           (1 - sum_empty g), CE against (1-eps) onehot(p) + eps/P; mean over positions,
           then modules.
  L_bal:   per-expert mass over all positions; per group var/mean^2 (population); mean
           over groups, then modules.

Usage: torch_pmol_dpo_peer.py SETUP.json [--dtype float32|float64] [--env default|tuned]
--env tuned sets OPENBLAS_NUM_THREADS = threads and OMP_WAIT_POLICY = PASSIVE before
torch loads (see thread_environment); default leaves the environment as it is.
SETUP.json (written by train_benchmark) names the model folder, the adapter tensors
(safetensors: <module>.pmol.lora_A [E*r, d_in], .lora_B [d_out, E*r], .router [S, d_in]),
the batch (token ids, prompt length, preferences) and every hyperparameter.
Then it serves commands, one per line on stdin, answering one JSON line on stdout:
  (first, once loaded) {"ready": true, "torch": version, "threads": n,
                  "rss_after_import_mb": RSS after importing torch, before loading anything}
  step            one training step; {"seconds": s, "loss": L}
  dump PATH       one training step, then writes PATH (safetensors, F64): loss/total,
                  loss/dpo, loss/group, loss/balance, grad_norm (pre-clip), lr,
                  grad/<name> (pre-clip gradients) and <name> (tensors after the update)
  profile N       N repetitions of each phase, medians in seconds: {"reference": ...,
                  "policy": ..., "clip": ..., "adamw": ..., "frozen_fwd": ...,
                  "frozen_fwd_bwd": ...} (policy: losses + backward with the reference
                  log-probs cached; frozen: the base model alone, logits for every
                  position, backward to the embedding output from zero dlogits)
  reset_peak      resets VmHWM (peak RSS) to the current RSS; {"reset": true|false}
  peak            {"peak_rss_mb": ru_maxrss of this process, "peak_train_rss_mb": VmHWM
                  since reset_peak}
  quit            the same as peak, then exits
"seconds" is the wall time of the whole step (zero_grad to scheduler.step), timed here so
the pipe is not counted.
"""
import gc
import json
import math
import os
import resource
import statistics
import struct
import sys
import time


def thread_environment():
    """--env tuned: OpenBLAS limited to the thread count and OpenMP threads that sleep
    when idle. Must run before numpy/torch load OpenBLAS and libgomp. Debian's torch
    computes GEMMs with OpenBLAS's own pthreads (torch.set_num_threads does not reach
    them) and everything else with OpenMP threads; with both pools spinning on the same
    cores a 2-thread step is ~2x slower than either pool alone."""
    if __name__ == "__main__" and "--env" in sys.argv and sys.argv[sys.argv.index("--env") + 1] == "tuned":
        with open(sys.argv[1]) as f:
            threads = json.load(f)["threads"]
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


thread_environment()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

NP_DTYPES = {"F32": np.float32, "F64": np.float64}
TARGETS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def read_safetensors(path, dtype):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[8 + n + b: 8 + n + end], dtype=NP_DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = torch.from_numpy(arr.copy()).to(dtype)
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float64).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def lr_factor(s, kind, warmup, total, min_ratio):
    """pmol/optim/lr_schedule.h: the factor of 0-based optimizer step s."""
    if s < warmup:
        return s / max(1, warmup)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        f = max(0.0, (total - s) / max(1, total - warmup))
    else:
        p = min(1.0, (s - warmup) / max(1, total - warmup))
        f = 0.5 * (1.0 + math.cos(math.pi * p))
    return min_ratio + (1.0 - min_ratio) * f


class PmolLlama(torch.nn.Module):
    """Frozen Llama base + trainable stacked PMoL adapters on every targeted linear."""

    def __init__(self, cfg, base, adapters, setup, dtype):
        super().__init__()
        self.cfg = cfg
        self.base = base  # frozen tensors, not Parameters
        self.adapters = torch.nn.ParameterDict(
            {k.replace(".", "__"): torch.nn.Parameter(v) for k, v in adapters.items()})
        self.hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads", self.nh)
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.rank = setup["rank"]
        self.n_experts = sum(setup["experts_per_group"])
        self.scale = setup["alpha"] / setup["rank"]
        self.tau = setup["router_temperature"]
        self.use_adapters = True
        self.record = []
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        ang = torch.arange(setup["seq"], dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat((ang, ang), -1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)
        T = setup["seq"]
        self.mask = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)

    def p(self, name):
        return self.adapters[name.replace(".", "__")]

    def linear(self, x, module):
        y = F.linear(x, self.base[module + ".weight"])
        if not self.use_adapters:
            return y
        g = torch.softmax(F.linear(x, self.p(module + ".pmol.router")) / self.tau, -1)
        self.record.append(g)
        h = F.linear(x, self.p(module + ".pmol.lora_A"))  # [..., E*r]
        lead, E, r = h.shape[:-1], self.n_experts, self.rank
        hs = (h.view(*lead, E, r) * (g[..., :E] * self.scale).unsqueeze(-1)).view(*lead, E * r)
        return y + F.linear(hs, self.p(module + ".pmol.lora_B"))

    def norm(self, x, name):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.base[name] * (x * torch.rsqrt(var + self.eps))

    def forward(self, ids):
        return self.from_embeddings(F.embedding(ids, self.base["model.embed_tokens.weight"]))

    def from_embeddings(self, x):
        B, T, _ = x.shape
        nh, nkv, hd = self.nh, self.nkv, self.hd
        cos, sin = self.cos[:T], self.sin[:T]

        def rot(t):
            h = t.shape[-1] // 2
            return torch.cat((-t[..., h:], t[..., :h]), -1)

        for i in range(self.cfg["num_hidden_layers"]):
            pre = f"model.layers.{i}."
            h = self.norm(x, pre + "input_layernorm.weight")
            q = self.linear(h, pre + "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
            k = self.linear(h, pre + "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
            v = self.linear(h, pre + "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            k = k[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)  # HF repeat_kv
            v = v[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + self.mask[:T, :T], -1) @ v
            x = x + self.linear(a.transpose(1, 2).reshape(B, T, nh * hd), pre + "self_attn.o_proj")
            h = self.norm(x, pre + "post_attention_layernorm.weight")
            gu = F.silu(self.linear(h, pre + "mlp.gate_proj")) * self.linear(h, pre + "mlp.up_proj")
            x = x + self.linear(gu, pre + "mlp.down_proj")
        x = self.norm(x, "model.norm.weight")
        head = self.base["model.embed_tokens.weight"] if self.cfg.get("tie_word_embeddings") else self.base["lm_head.weight"]
        return F.linear(x, head)


def response_logps(logits, ids, prompt_len):
    """Summed log-probs of the response tokens (token t scored by the logits at t - 1)."""
    lp = torch.log_softmax(logits[:, prompt_len - 1:-1], -1)
    return lp.gather(-1, ids[:, prompt_len:, None]).squeeze(-1).sum(-1)


class Trainer:
    def __init__(self, setup, dtype):
        self.s = setup
        with open(setup["model_dir"] + "/config.json") as f:
            cfg = json.load(f)
        base = read_safetensors(setup["model_dir"] + "/model.safetensors", dtype)
        adapters = read_safetensors(setup["adapters"], dtype)
        self.model = PmolLlama(cfg, base, adapters, setup, dtype)
        self.names = list(adapters)  # file order = pmol's Params() order
        B, P = setup["batch"], setup["prompt_len"]
        self.B, self.P = B, P
        self.ids = torch.tensor(setup["chosen_ids"] + setup["rejected_ids"], dtype=torch.long)
        prefs = torch.tensor(setup["preferences"] * 2, dtype=torch.long)
        groups = setup["experts_per_group"]
        n_groups, E = len(groups), sum(groups)
        S = E + setup["empty_experts"]
        eps = setup["group_label_smoothing"]
        self.target = ((1 - eps) * F.one_hot(prefs, n_groups).to(dtype) + eps / n_groups)  # [2B, P]
        member = torch.zeros(S, n_groups, dtype=dtype)
        first = 0
        self.group_slices = []
        for k, n in enumerate(groups):
            member[first:first + n, k] = 1
            self.group_slices.append((first, first + n))
            first += n
        self.member, self.E = member, E
        params = [self.model.p(n) for n in self.names]
        routers = [self.model.p(n) for n in self.names if n.endswith(".pmol.router")]
        others = [self.model.p(n) for n in self.names if not n.endswith(".pmol.router")]
        wd = setup["weight_decay"]
        self.params = params
        self.opt = torch.optim.AdamW(
            [{"params": others, "weight_decay": wd},
             {"params": routers, "weight_decay": wd if setup["decay_routers"] else 0.0}],
            lr=setup["lr"], betas=(setup["beta1"], setup["beta2"]), eps=setup["eps"], foreach=True)
        sched = (setup["schedule"], setup["warmup_steps"], setup["total_steps"], setup["min_lr_ratio"])
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, *sched))

    def reference(self):
        m = self.model
        with torch.no_grad():
            m.use_adapters = False
            ref = response_logps(m(self.ids), self.ids, self.P)
            m.use_adapters = True
        return ref

    def losses(self, ref=None):
        s, m, B, P = self.s, self.model, self.B, self.P
        if ref is None:
            ref = self.reference()
        m.record = []
        pol = response_logps(m(self.ids), self.ids, P)
        delta = (pol[:B] - ref[:B]) - (pol[B:] - ref[B:])
        dpo = -F.logsigmoid(s["beta"] * delta).mean()
        g = torch.stack(m.record)  # [M, 2B, T, S]
        m.record = []
        resp = g[:, :, P:, :]
        mass = (resp @ self.member) / (1 - resp[..., self.E:].sum(-1, keepdim=True))
        group = -(self.target[None, :, None, :] * torch.log(mass)).sum(-1).mean((1, 2)).mean()
        tot = g.sum((1, 2))  # [M, S]
        cvs = []
        for a, b in self.group_slices:
            v = tot[:, a:b]
            mu = v.mean(-1)
            cvs.append(((v - mu[:, None]) ** 2).mean(-1) / mu ** 2 if b - a > 1 else torch.zeros_like(mu))
        balance = torch.stack(cvs, -1).mean(-1).mean()
        total = dpo + s["group_loss_weight"] * group + s["balance_loss_weight"] * balance
        return total, dpo, group, balance

    def step(self, dump=None):
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        total, dpo, group, balance = self.losses()
        total.backward()
        grads = [p.grad.detach().clone() for p in self.params] if dump else None
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.s["max_grad_norm"])
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        seconds = time.perf_counter() - start
        if dump:
            out = {"loss/total": total, "loss/dpo": dpo, "loss/group": group, "loss/balance": balance,
                   "grad_norm": norm, "lr": torch.tensor(lr, dtype=torch.float64)}
            for n, g_ in zip(self.names, grads):
                out["grad/" + n] = g_
            for n, p in zip(self.names, self.params):
                out[n] = p
            write_safetensors(dump, {k: v.reshape(v.shape) for k, v in out.items()})
        return {"seconds": seconds, "loss": float(total)}

    def profile(self, reps):
        """Medians of each phase of step(), and of the frozen model alone."""
        t = {k: [] for k in ("reference", "policy", "clip", "adamw", "frozen_fwd", "frozen_fwd_bwd")}
        m = self.model
        for _ in range(reps):
            self.opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            ref = self.reference()
            t["reference"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            self.losses(ref)[0].backward()
            t["policy"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(self.params, self.s["max_grad_norm"])
            t["clip"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            self.opt.step()
            self.sched.step()
            t["adamw"].append(time.perf_counter() - t0)
            m.use_adapters = False
            t0 = time.perf_counter()
            with torch.no_grad():
                m(self.ids)
            t["frozen_fwd"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            x = F.embedding(self.ids, m.base["model.embed_tokens.weight"]).requires_grad_(True)
            logits = m.from_embeddings(x)
            logits.backward(torch.zeros_like(logits))
            t["frozen_fwd_bwd"].append(time.perf_counter() - t0)
            m.use_adapters = True
        return {k: statistics.median(v) for k, v in t.items()}


def reset_peak_rss():
    """Resets VmHWM to the current RSS (as train_benchmark does for itself)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_rss_mb(key="VmHWM"):
    """VmHWM (peak RSS since the last reset) or VmRSS of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return float(line.split()[1]) / 1024.0
    return -1.0


def main():
    dtype = torch.float32
    if "--dtype" in sys.argv:
        dtype = {"float32": torch.float32, "float64": torch.float64}[sys.argv[sys.argv.index("--dtype") + 1]]
    with open(sys.argv[1]) as f:
        setup = json.load(f)
    torch.set_num_threads(setup["threads"])
    rss_after_import = vm_rss_mb("VmRSS")
    trainer = Trainer(setup, dtype)
    print(json.dumps({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "rss_after_import_mb": rss_after_import}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "step":
            reply = trainer.step()
        elif cmd[0] == "dump":
            reply = trainer.step(dump=cmd[1])
        elif cmd[0] == "profile":
            reply = trainer.profile(int(cmd[1]))
        elif cmd[0] == "reset_peak":
            gc.collect()
            reply = {"reset": reset_peak_rss()}
        elif cmd[0] in ("peak", "quit"):
            reply = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                     "peak_train_rss_mb": vm_rss_mb()}
            if cmd[0] == "quit":
                print(json.dumps(reply), flush=True)
                return
        else:
            reply = {"error": "unknown command " + cmd[0]}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()

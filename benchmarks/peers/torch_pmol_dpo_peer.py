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

Model: HF Llama / Qwen2 semantics (RMSNorm, rotate_half RoPE, GQA, SwiGLU, a linear's
bias wherever the checkpoint has one, e.g. Qwen2's q/k/v). Attention: with PyTorch >= 2
F.scaled_dot_product_attention(is_causal=True) (HF's "sdpa"); older PyTorch (Debian's
1.13 has no SDPA) HF's eager form, softmax(q k^T / sqrt(d) + causal mask) v. Logits for
every position, as HF's LlamaForCausalLM returns them.
PMoL adapted linear (every targeted module), experts STACKED as in pmol:
  g = softmax(x W_r^T / tau);  h = x A_all^T (one GEMM);
  y = x W0^T + b + hs B_all^T (one GEMM), hs = h viewed [N, E, r] * (g[:, :E] alpha/r)[:, :, None].
Router probabilities of all modules are stacked for the auxiliary losses:
  L_group: over positions whose token is a response token, m_k = sum_{i in G_k} g_i /
           (1 - sum_empty g), CE against (1-eps) onehot(p) + eps/P; mean over positions,
           then modules.
  L_bal:   per-expert mass over all positions; per group var/mean^2 (population); mean
           over groups, then modules.

Usage: torch_pmol_dpo_peer.py SETUP.json [--dtype float32|float64|bf16] [--env default|tuned]
                                         [--device cpu|cuda] [--compile]
--dtype float32 / float64: every tensor in that type, full-precision GEMMs (no TF32).
--dtype bf16: mixed precision as PEFT + TRL run it: the frozen base weights stored in
  bfloat16, the trainable adapter tensors and AdamW's state in float32, the forward and
  the losses under torch.autocast(bfloat16) (GEMMs in bf16; softmax, log-softmax, norms in
  f32), the backward outside it.
--compile: torch.compile (default mode) of the reference forward + log-probs and of the
  policy forward + log-probs + losses (the backward through the compiled graph);
  clipping and AdamW stay eager. Needs PyTorch >= 2; compilation happens in the first step.
--env tuned sets OPENBLAS_NUM_THREADS = threads and OMP_WAIT_POLICY = PASSIVE before
torch loads (see thread_environment); default leaves the environment as it is.
SETUP.json (written by train_benchmark) names the model folder, the adapter tensors
(safetensors: <module>.pmol.lora_A [E*r, d_in], .lora_B [d_out, E*r], .router [S, d_in]),
the batch (token ids, prompt length, preferences) and every hyperparameter.
Then it serves commands, one per line on stdin, answering one JSON line on stdout:
  (first, once loaded) {"ready": true, "torch": version, "threads": n, "device": name,
                  "attention": "sdpa" | "eager", "rss_after_import_mb": RSS after
                  importing torch, before loading anything}
                  or {"error": why} when it cannot start (it then exits)
  step            one training step; {"seconds": s, "loss": L}
  dump PATH       one training step, then writes PATH (safetensors, F64): loss/total,
                  loss/dpo, loss/group, loss/balance, grad_norm (pre-clip), lr,
                  grad/<name> (pre-clip gradients) and <name> (tensors after the update)
  profile N       N repetitions of each phase, medians in seconds: {"reference": ...,
                  "policy": ..., "clip": ..., "adamw": ..., "frozen_fwd": ...,
                  "frozen_fwd_bwd": ...} (policy: losses + backward with the reference
                  log-probs cached; frozen: the base model alone, logits for every
                  position, backward to the embedding output from zero dlogits)
  reset_peak      resets VmHWM (peak RSS) to the current RSS, and on CUDA the peak of
                  torch.cuda.max_memory_allocated; {"reset": true|false (VmHWM)}
  release         frees what the CUDA caching allocator holds (torch.cuda.empty_cache)
  peak            {"peak_rss_mb": ru_maxrss of this process, "peak_train_rss_mb": VmHWM
                  since reset_peak, on CUDA "peak_device_bytes":
                  torch.cuda.max_memory_allocated() since reset_peak}
  quit            the same as peak, then exits
A command that raises answers {"error": why} and the peer goes on serving.
"seconds" is the wall time of the whole step (zero_grad to scheduler.step; on CUDA from
and to torch.cuda.synchronize()), timed here so the pipe is not counted.
"""
import argparse
import contextlib
import gc
import json
import math
import os
import resource
import statistics
import struct
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch peer of benchmarks/train_benchmark")
    p.add_argument("setup")
    p.add_argument("--dtype", choices=["float32", "float64", "bf16"], default="float32")
    p.add_argument("--env", choices=["default", "tuned"], default="default")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--compile", action="store_true")
    return p.parse_args()


def thread_environment(args):
    """--env tuned: OpenBLAS limited to the thread count and OpenMP threads that sleep
    when idle. Must run before numpy/torch load OpenBLAS and libgomp. Debian's torch
    computes GEMMs with OpenBLAS's own pthreads (torch.set_num_threads does not reach
    them) and everything else with OpenMP threads; with both pools spinning on the same
    cores a 2-thread step is ~2x slower than either pool alone."""
    if args.env == "tuned":
        with open(args.setup) as f:
            threads = json.load(f)["threads"]
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


if __name__ == "__main__":
    ARGS = parse_args()
    thread_environment(ARGS)
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
        b = t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
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
    """Frozen Llama/Qwen2 base + trainable stacked PMoL adapters on every targeted linear.
    `base` holds the frozen tensors (not Parameters) in the activation dtype `act_dtype`;
    the adapters are Parameters in their own dtype."""

    def __init__(self, cfg, base, adapters, setup, act_dtype, device):
        super().__init__()
        self.cfg = cfg
        self.base = base
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
        # RMSNorm statistics in at least f32 (HF's Qwen2RMSNorm/LlamaRMSNorm upcast bf16).
        self.norm_dtype = torch.float32 if act_dtype == torch.bfloat16 else act_dtype
        inv = 1.0 / (cfg.get("rope_theta", 10000.0) ** (torch.arange(0, self.hd, 2, dtype=torch.float64) / self.hd))
        ang = torch.arange(setup["seq"], dtype=torch.float64)[:, None] * inv[None, :]
        emb = torch.cat((ang, ang), -1)
        self.cos, self.sin = emb.cos().to(device, act_dtype), emb.sin().to(device, act_dtype)
        self.sdpa = hasattr(F, "scaled_dot_product_attention")
        if not self.sdpa:
            T = setup["seq"]
            self.mask = torch.full((T, T), float("-inf"), dtype=act_dtype, device=device).triu(1)

    def p(self, name):
        return self.adapters[name.replace(".", "__")]

    def linear(self, x, module, gates):
        """The adapted linear; `gates` (a list, or None for the base model alone) receives
        this module's router probabilities."""
        y = F.linear(x, self.base[module + ".weight"], self.base.get(module + ".bias"))
        if gates is None:
            return y
        g = torch.softmax(F.linear(x, self.p(module + ".pmol.router")) / self.tau, -1)
        gates.append(g)
        h = F.linear(x, self.p(module + ".pmol.lora_A"))  # [..., E*r]
        lead, E, r = h.shape[:-1], self.n_experts, self.rank
        hs = (h.view(*lead, E, r) * (g[..., :E] * self.scale).unsqueeze(-1)).view(*lead, E * r)
        return y + F.linear(hs, self.p(module + ".pmol.lora_B"))

    def norm(self, x, name):
        xn = x.to(self.norm_dtype)
        var = xn.pow(2).mean(-1, keepdim=True)
        return self.base[name] * (xn * torch.rsqrt(var + self.eps)).to(x.dtype)

    def forward(self, ids, adapters):
        """(logits [B, T, V], stacked router probabilities [M, B, T, S] or None)."""
        return self.from_embeddings(F.embedding(ids, self.base["model.embed_tokens.weight"]), adapters)

    def from_embeddings(self, x, adapters):
        B, T, _ = x.shape
        nh, nkv, hd = self.nh, self.nkv, self.hd
        cos, sin = self.cos[:T], self.sin[:T]
        gates = [] if adapters else None

        def rot(t):
            h = t.shape[-1] // 2
            return torch.cat((-t[..., h:], t[..., :h]), -1)

        for i in range(self.cfg["num_hidden_layers"]):
            pre = f"model.layers.{i}."
            h = self.norm(x, pre + "input_layernorm.weight")
            q = self.linear(h, pre + "self_attn.q_proj", gates).view(B, T, nh, hd).transpose(1, 2)
            k = self.linear(h, pre + "self_attn.k_proj", gates).view(B, T, nkv, hd).transpose(1, 2)
            v = self.linear(h, pre + "self_attn.v_proj", gates).view(B, T, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            k = k[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)  # HF repeat_kv
            v = v[:, :, None].expand(B, nkv, nh // nkv, T, hd).reshape(B, nh, T, hd)
            if self.sdpa:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + self.mask[:T, :T], -1) @ v
            x = x + self.linear(a.transpose(1, 2).reshape(B, T, nh * hd), pre + "self_attn.o_proj", gates)
            h = self.norm(x, pre + "post_attention_layernorm.weight")
            gu = F.silu(self.linear(h, pre + "mlp.gate_proj", gates)) * self.linear(h, pre + "mlp.up_proj", gates)
            x = x + self.linear(gu, pre + "mlp.down_proj", gates)
        x = self.norm(x, "model.norm.weight")
        head = self.base["model.embed_tokens.weight"] if self.cfg.get("tie_word_embeddings") else self.base["lm_head.weight"]
        return F.linear(x, head), (torch.stack(gates) if adapters else None)


def response_logps(logits, ids, prompt_len):
    """Summed log-probs of the response tokens (token t scored by the logits at t - 1)."""
    lp = torch.log_softmax(logits[:, prompt_len - 1:-1], -1)
    return lp.gather(-1, ids[:, prompt_len:, None]).squeeze(-1).sum(-1)


class Trainer:
    def __init__(self, setup, dtype_name, device, compile_):
        self.s = setup
        self.device = device
        param_dtype = torch.float64 if dtype_name == "float64" else torch.float32
        act_dtype = torch.bfloat16 if dtype_name == "bf16" else param_dtype
        if device == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False  # f32 GEMMs in full f32, as pmol's
        self.mixed = dtype_name == "bf16"
        with open(setup["model_dir"] + "/config.json") as f:
            cfg = json.load(f)
        base = {k: v.to(device) for k, v in read_safetensors(setup["model_dir"] + "/model.safetensors", act_dtype).items()}
        adapters = {k: v.to(device) for k, v in read_safetensors(setup["adapters"], param_dtype).items()}
        self.model = PmolLlama(cfg, base, adapters, setup, act_dtype, device)
        self.names = list(adapters)  # file order = pmol's Params() order
        B, P = setup["batch"], setup["prompt_len"]
        self.B, self.P = B, P
        self.ids = torch.tensor(setup["chosen_ids"] + setup["rejected_ids"], dtype=torch.long, device=device)
        prefs = torch.tensor(setup["preferences"] * 2, dtype=torch.long, device=device)
        groups = setup["experts_per_group"]
        n_groups, E = len(groups), sum(groups)
        S = E + setup["empty_experts"]
        eps = setup["group_label_smoothing"]
        self.target = ((1 - eps) * F.one_hot(prefs, n_groups).to(param_dtype) + eps / n_groups)  # [2B, P]
        member = torch.zeros(S, n_groups, dtype=param_dtype, device=device)
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
        if compile_:
            if not hasattr(torch, "compile"):
                raise RuntimeError(f"--compile needs torch.compile (PyTorch >= 2); this is {torch.__version__}")
            self.reference_logps = torch.compile(self.reference_logps)
            self.policy_losses = torch.compile(self.policy_losses)

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def autocast(self):
        if self.mixed:
            return torch.autocast(device_type=self.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def reference_logps(self):
        logits, _ = self.model(self.ids, False)
        return response_logps(logits, self.ids, self.P)

    def policy_losses(self, ref):
        s, B, P = self.s, self.B, self.P
        logits, g = self.model(self.ids, True)  # g: [M, 2B, T, S]
        pol = response_logps(logits, self.ids, P)
        delta = (pol[:B] - ref[:B]) - (pol[B:] - ref[B:])
        dpo = -F.logsigmoid(s["beta"] * delta).mean()
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

    def reference(self):
        with torch.no_grad(), self.autocast():
            return self.reference_logps()

    def losses(self, ref=None):
        if ref is None:
            ref = self.reference()
        with self.autocast():
            return self.policy_losses(ref)

    def step(self, dump=None):
        self.sync()
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        total, dpo, group, balance = self.losses()
        total.backward()
        grads = [p.grad.detach().clone() for p in self.params] if dump else None
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.s["max_grad_norm"])
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.sync()
        seconds = time.perf_counter() - start
        if dump:
            out = {"loss/total": total, "loss/dpo": dpo, "loss/group": group, "loss/balance": balance,
                   "grad_norm": norm, "lr": torch.tensor(lr, dtype=torch.float64)}
            for n, g_ in zip(self.names, grads):
                out["grad/" + n] = g_
            for n, p in zip(self.names, self.params):
                out[n] = p
            write_safetensors(dump, out)
        return {"seconds": seconds, "loss": float(total)}

    def profile(self, reps):
        """Medians of each phase of step(), and of the frozen model alone."""
        t = {k: [] for k in ("reference", "policy", "clip", "adamw", "frozen_fwd", "frozen_fwd_bwd")}
        m = self.model

        def timed(phase, fn):
            self.sync()
            t0 = time.perf_counter()
            r = fn()
            self.sync()
            t[phase].append(time.perf_counter() - t0)
            return r

        def frozen_fwd():
            with torch.no_grad(), self.autocast():
                m(self.ids, False)

        def frozen_fwd_bwd():
            x = F.embedding(self.ids, m.base["model.embed_tokens.weight"]).requires_grad_(True)
            with self.autocast():
                logits, _ = m.from_embeddings(x, False)
            logits.backward(torch.zeros_like(logits))

        def adamw():
            self.opt.step()
            self.sched.step()

        for _ in range(reps):
            self.opt.zero_grad(set_to_none=True)
            ref = timed("reference", self.reference)
            timed("policy", lambda: self.losses(ref)[0].backward())
            timed("clip", lambda: torch.nn.utils.clip_grad_norm_(self.params, self.s["max_grad_norm"]))
            timed("adamw", adamw)
            timed("frozen_fwd", frozen_fwd)
            timed("frozen_fwd_bwd", frozen_fwd_bwd)
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


def serve(trainer, cmd, cuda):
    if cmd[0] == "step":
        return trainer.step()
    if cmd[0] == "dump":
        return trainer.step(dump=cmd[1])
    if cmd[0] == "profile":
        return trainer.profile(int(cmd[1]))
    if cmd[0] == "reset_peak":
        gc.collect()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        return {"reset": reset_peak_rss()}
    if cmd[0] == "release":
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        return {"released": cuda}
    if cmd[0] in ("peak", "quit"):
        reply = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                 "peak_train_rss_mb": vm_rss_mb()}
        if cuda:
            reply["peak_device_bytes"] = torch.cuda.max_memory_allocated()
        return reply
    return {"error": "unknown command " + cmd[0]}


def main(args):
    # The replies get their own copy of stdout; whatever else writes to stdout (a library,
    # a compiler's log) goes to stderr and cannot break the one-line-per-reply protocol.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def answer(obj):
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    with open(args.setup) as f:
        setup = json.load(f)
    torch.set_num_threads(setup["threads"])
    rss_after_import = vm_rss_mb("VmRSS")
    cuda = args.device == "cuda"
    try:
        if cuda and not torch.cuda.is_available():
            raise RuntimeError(f"--device cuda: PyTorch {torch.__version__} sees no CUDA device")
        trainer = Trainer(setup, args.dtype, args.device, args.compile)
    except Exception as e:  # noqa: BLE001 (reported to train_benchmark, which goes on without this peer)
        answer({"error": f"{type(e).__name__}: {e}"})
        return
    answer({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "attention": "sdpa" if trainer.model.sdpa else "eager",
            "rss_after_import_mb": rss_after_import})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            reply = serve(trainer, cmd, cuda)
        except Exception as e:  # noqa: BLE001 (e.g. out of memory, a compile error)
            reply = {"error": f"{type(e).__name__}: {e}"}
        answer(reply)
        if cmd[0] == "quit":
            return


if __name__ == "__main__":
    main(ARGS)

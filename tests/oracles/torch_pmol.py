#!/usr/bin/python3
"""Independent PyTorch reference of one PMoL training step's losses and gradients.

Written from pmol's definition of the method (DESIGN.md section 1) and the contract of
`pmol grads`; it shares nothing with the C++ code under test. Everything runs in float64
with autograd, one unpadded sequence at a time, on the Llama-family decoder of
torch_llama.py (its `forward` is reused; the adapters are injected by wrapping its
module-level `linear` for the duration of a call, so torch_llama.py stays unchanged).

What it computes, for a run config (text-format RunConfig), a batch of preference pairs
and the adapter tensors:

* Adapted linear (module m = "model.layers.L.self_attn.q_proj" ...), input x:
      y = W0 x + b + sum_i gk_i(x) * (alpha/r) * B_i A_i x
  A_i = rows [i*r, (i+1)*r) of `m.pmol.lora_A`, B_i = columns [i*r, (i+1)*r) of
  `m.pmol.lora_B`, experts numbered group-major; router `m.pmol.router` has one row per
  expert, then one per empty expert. g = softmax(W_r x / tau) over all N slots (dense);
  top_k > 0 keeps the k largest g (empty slots compete), gk = g / sum of the kept, 0
  elsewhere; top_k = 0: gk = g. Empty slots add nothing. The experts are applied one at
  a time (a plain loop), not through the stacked GEMM pmol uses.
  LORA: one expert, no router, gk = 1. FULL: no adapters, every base weight trains.
* Rows: chosen = prompt ++ chosen, rejected = prompt ++ rejected. Sequence log-prob
  log pi(y) = sum_t log softmax(logits[t-1])[y_t] over response positions t.
  Reference policy: adapters disabled (FULL: the initial weights, detached).
* DPO: delta = (lp_w - ref_w) - (lp_l - ref_l);
  sigmoid -log s(b d); ipo (d - 1/(2b))^2 (ipo_length_normalize: each of the four
  log-probs divided by its response length first); hinge max(0, 1 - b d); conservative
  -(1-e) log s(b d) - e log s(-b d), e = label_smoothing. loss/dpo = mean over pairs.
* loss/group (per adapted module, on the dense g): over positions whose input token is a
  response token, m_k = sum_{i in G_k} g_i / (1 - sum_empty g), CE = -sum_k yhat_k log m_k,
  yhat = (1-eg) onehot(p) + eg/P; mean over positions (chosen and rejected pooled), then
  mean over modules.
* loss/balance (per module): mass_i = sum over all positions of all rows of g_i; per group
  population variance / mean^2 of its experts' masses (0 for a single expert); mean over
  groups, then over modules.
* loss/total = loss/dpo + group_loss_weight loss/group + balance_loss_weight loss/balance.
* SFT (assumed): loss/sft = mean over all chosen-response tokens of -log p, only chosen
  rows are run (aux losses over them); total = sft + aux. REWARD: r = score.weight . h
  with h the final-norm hidden state of each row's last token, loss/reward = mean
  -log s(r_w - r_l); aux losses over all rows; total = reward + aux.
* Metrics (scalars, as pmol logs them; see step_metrics): rewards/chosen, rejected,
  margins, accuracy (overall and per preference), router[/<pref>]/group<k> and /empty.

Usage:
  torch_pmol.py JOBS.json   JOBS.json is a list of
      {"config": RUN.textproto, "batch": BATCH.json, "adapter": FILE|null,
       "init": FILE|null, "out": FILE, "model": DIR (optional, default model.path)}
    Trainable tensors come from "adapter" (any float dtype, read as f64); a trainable
    tensor absent there (e.g. score.weight) is taken from "init" (e.g. pmol's own output).
    Writes F64 tensors: every trainable tensor `<name>`, its gradient `grad/<name>`,
    scalars `loss/total`, `loss/dpo` (0 for SFT and REWARD, which add `loss/sft` or
    `loss/reward`), `loss/group`, `loss/balance`, the metrics, and `info/delta` [pairs] (DPO's delta, for choosing
    hinge betas).
  torch_pmol.py --selftest
    gradcheck (f64 finite differences) on tiny cases of every kind and loss, and
    self-consistency checks; prints one line per check, exits non-zero on a failure.
"""
import json
import math
import os
import re
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama  # noqa: E402

TARGETS = {
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}

# ---------------------------------------------------------------------------------------
# Text-format protobuf (the subset run configs use) and RunConfig defaults.


_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}<>:;,\[\]]|[^\s{}<>:;,\[\]"\'#]+')


def _scalar(tok):
    if tok[0] in "\"'":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    if tok in ("true", "True"):
        return True
    if tok in ("false", "False"):
        return False
    try:
        return int(tok, 0)
    except ValueError:
        pass
    try:
        return float(tok.rstrip("fF"))
    except ValueError:
        return tok  # an enum identifier


def parse_textproto(text):
    """{field: [values]}; message values are dicts of the same form."""
    toks = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    pos = 0

    def message(end):
        nonlocal pos
        out = {}
        while pos < len(toks) and toks[pos] != end:
            name = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            vals = []
            if toks[pos] in "{<":
                close = "}" if toks[pos] == "{" else ">"
                pos += 1
                vals.append(message(close))
                pos += 1
            elif toks[pos] == "[":
                pos += 1
                while toks[pos] != "]":
                    if toks[pos] == ",":
                        pos += 1
                        continue
                    if toks[pos] in "{<":
                        close = "}" if toks[pos] == "{" else ">"
                        pos += 1
                        vals.append(message(close))
                    else:
                        vals.append(_scalar(toks[pos]))
                    pos += 1
                pos += 1
            else:
                vals.append(_scalar(toks[pos]))
                pos += 1
            out.setdefault(name, []).extend(vals)
            if pos < len(toks) and toks[pos] in ",;":
                pos += 1
        if end is not None and pos >= len(toks):
            raise ValueError("unterminated message")
        return out

    return message(None)


def _get(msg, name, default):
    v = msg.get(name)
    return v[-1] if v else default


class Spec:
    """The fields of RunConfig this oracle needs, with the proto's defaults."""

    def __init__(self, rc):
        model = _get(rc, "model", {})
        ad = _get(rc, "adapter", {})
        ob = _get(rc, "objective", {})
        self.model_path = _get(model, "path", None)
        self.dtype = _get(model, "dtype", "f32")
        self.kind = _get(ad, "kind", "PMOL")
        groups = ad.get("groups", [])
        group_names = [_get(g, "name", "") for g in groups]
        data_names = list(_get(rc, "data", {}).get("preference_names", []))
        # Metric names per preference: data.preference_names, else the group names,
        # else "pref<p>".
        self.preference_names = data_names or group_names
        if groups:
            self.experts_per_group = [int(_get(g, "experts", 2)) for g in groups]
        else:
            self.experts_per_group = [int(_get(ad, "experts_per_group", 2))] * int(_get(ad, "num_groups", 0))
        self.n_empty = int(_get(ad, "empty_experts", 1))
        self.rank = int(_get(ad, "rank", 8))
        self.alpha = float(_get(ad, "alpha", 16))
        if float(_get(ad, "dropout", 0)) != 0:
            raise ValueError("the oracle supports adapter.dropout = 0 only")
        targets = ad.get("target_modules", []) or list(TARGETS)
        self.targets = []
        for t in targets:
            key = t[:-5] if t.endswith("_proj") else t
            if key not in TARGETS:
                raise ValueError("unknown target module " + t)
            self.targets.append(TARGETS[key])
        self.layers = [int(x) for x in ad.get("layers", [])]
        self.temperature = float(_get(ad, "router_temperature", 1))
        self.top_k = int(_get(ad, "top_k", 0))
        self.objective = _get(ob, "kind", "DPO")
        self.dpo_loss = _get(ob, "dpo_loss", "SIGMOID")
        self.beta = float(_get(ob, "beta", 0.1))
        self.label_smoothing = float(_get(ob, "label_smoothing", 0))
        self.ipo_norm = bool(_get(ob, "ipo_length_normalize", False))
        self.group_weight = float(_get(ob, "group_loss_weight", 0.1))
        self.group_smoothing = float(_get(ob, "group_label_smoothing", 0.1))
        self.balance_weight = float(_get(ob, "balance_loss_weight", 0.01))

    @property
    def n_experts(self):
        return sum(self.experts_per_group)

    @property
    def n_slots(self):
        return self.n_experts + self.n_empty

    @property
    def n_groups(self):
        return len(self.experts_per_group)

    def modules(self, cfg):
        layers = self.layers or list(range(cfg["num_hidden_layers"]))
        return [f"model.layers.{l}.{t}" for l in sorted(layers) for t in self.targets]

    def trainable_shapes(self, cfg, W):
        """{name: shape} of every tensor this run trains."""
        out = {}
        if self.kind == "FULL":
            out = {n: list(t.shape) for n, t in W.items()}
        else:
            for m in self.modules(cfg):
                d_out, d_in = W[m + ".weight"].shape
                if self.kind == "LORA":
                    out[m + ".pmol.lora_A"] = [self.rank, d_in]
                    out[m + ".pmol.lora_B"] = [d_out, self.rank]
                else:
                    out[m + ".pmol.lora_A"] = [self.n_experts * self.rank, d_in]
                    out[m + ".pmol.lora_B"] = [d_out, self.n_experts * self.rank]
                    out[m + ".pmol.router"] = [self.n_slots, d_in]
        if self.objective == "REWARD":
            out["score.weight"] = [1, cfg["hidden_size"]]
        return out


# ---------------------------------------------------------------------------------------
# The model with adapters.


def gate(spec, z):
    """Dense g and the output weights gk, from router logits z [..., N]."""
    g = torch.softmax(z / spec.temperature, dim=-1)
    if spec.top_k <= 0:
        return g, g
    idx = torch.topk(g, spec.top_k, dim=-1).indices
    keep = torch.zeros_like(g).scatter(-1, idx, 1.0)
    kept = g * keep
    return g, kept / kept.sum(dim=-1, keepdim=True)


def adapter_output(spec, P, module, x, record):
    """sum_i gk_i (alpha/r) B_i A_i x for module at input x [..., d_in]; records dense g."""
    r, scale = spec.rank, spec.alpha / spec.rank
    A, B = P[module + ".pmol.lora_A"], P[module + ".pmol.lora_B"]
    if spec.kind == "LORA":
        return scale * (x @ A.T) @ B.T
    g, gk = gate(spec, x @ P[module + ".pmol.router"].T)
    record.setdefault(module, []).append(g.reshape(-1, g.shape[-1]))
    out = torch.zeros(x.shape[:-1] + (B.shape[0],), dtype=x.dtype)
    for e in range(spec.n_experts):
        Ae, Be = A[e * r:(e + 1) * r], B[:, e * r:(e + 1) * r]
        out = out + gk[..., e:e + 1] * scale * ((x @ Ae.T) @ Be.T)
    return out


def run_model(cfg, W, ids, spec=None, P=None, record=None):
    """torch_llama.forward with the adapters of (spec, P) added to the targeted linears."""
    adapted = set(spec.modules(cfg)) if spec is not None and spec.kind in ("PMOL", "LORA") else set()
    base_linear = torch_llama.linear

    def linear(x, Wd, prefix, name):
        y = base_linear(x, Wd, prefix, name)
        if prefix + name in adapted:
            y = y + adapter_output(spec, P, prefix + name, x, record)
        return y

    # torch_llama.forward calls retain_grad() on the embedding output, which needs it to
    # require grad: give a frozen embedding a fresh leaf copy (its gradient is dropped).
    W = dict(W)
    emb = W["model.embed_tokens.weight"]
    if not emb.requires_grad:
        W["model.embed_tokens.weight"] = emb.detach().clone().requires_grad_(True)
    torch_llama.linear = linear
    try:
        with torch.enable_grad():
            logits, _ = torch_llama.forward(cfg, W, ids)
    finally:
        torch_llama.linear = base_linear
    return logits


def final_hidden(cfg, W, ids, spec=None, P=None, record=None):
    """The final-norm hidden states: the model with an identity LM head."""
    cfg2 = dict(cfg, tie_word_embeddings=False)
    W2 = dict(W)
    W2["lm_head.weight"] = torch.eye(cfg["hidden_size"], dtype=torch.float64)
    return run_model(cfg2, W2, ids, spec, P, record)


def response_logp(logits, ids, prompt_len):
    lp = torch.log_softmax(logits[0, prompt_len - 1:-1], dim=-1)
    return lp.gather(-1, ids[0, prompt_len:, None]).sum()


# ---------------------------------------------------------------------------------------
# Losses.


def dpo_loss(spec, lw, ll, rw, rl, len_w, len_l):
    if spec.dpo_loss == "IPO" and spec.ipo_norm:
        lw, rw, ll, rl = lw / len_w, rw / len_w, ll / len_l, rl / len_l
    delta = (lw - rw) - (ll - rl)
    b = spec.beta
    if spec.dpo_loss == "SIGMOID":
        per = -F.logsigmoid(b * delta)
    elif spec.dpo_loss == "IPO":
        per = (delta - 1 / (2 * b)) ** 2
    elif spec.dpo_loss == "HINGE":
        per = torch.relu(1 - b * delta)
    elif spec.dpo_loss == "CONSERVATIVE":
        e = spec.label_smoothing
        per = -(1 - e) * F.logsigmoid(b * delta) - e * F.logsigmoid(-b * delta)
    else:
        raise ValueError("unknown dpo_loss " + spec.dpo_loss)
    return per.mean(), delta


def group_loss(spec, g_resp, prefs):
    """g_resp [n, N] dense gates at response positions, prefs [n] long."""
    n_groups, E = spec.n_groups, spec.n_experts
    denom = 1 - g_resp[:, E:].sum(-1)
    first = 0
    masses = []
    for k in range(n_groups):
        masses.append(g_resp[:, first:first + spec.experts_per_group[k]].sum(-1) / denom)
        first += spec.experts_per_group[k]
    m = torch.stack(masses, dim=-1)
    eps = spec.group_smoothing
    target = (1 - eps) * F.one_hot(prefs, n_groups).to(m.dtype) + eps / n_groups
    return (-(target * torch.log(m)).sum(-1)).mean()


def balance_loss(spec, g_all):
    mass = g_all.sum(0)
    first, per_group = 0, []
    for n in spec.experts_per_group:
        v = mass[first:first + n]
        first += n
        if n == 1:
            per_group.append(torch.zeros((), dtype=mass.dtype))
        else:
            per_group.append(((v - v.mean()) ** 2).mean() / v.mean() ** 2)
    return torch.stack(per_group).mean()


def step_losses(cfg, W, spec, P, pairs):
    """All losses of one step. W: base weights (for FULL, P holds them instead)."""
    full = spec.kind == "FULL"
    policy_W = dict(W, **P) if full else W
    ref_W = {n: t.detach() for n, t in W.items()}
    record, resp_masks, row_prefs = {}, [], []
    zero = torch.zeros((), dtype=torch.float64)

    def run_row(prompt, resp, pref, hidden=False):
        ids = torch.tensor([prompt + resp], dtype=torch.long)
        fn = final_hidden if hidden else run_model
        out = fn(cfg, policy_W, ids, None if full else spec, P, record)
        resp_masks.append(torch.arange(ids.shape[1]) >= len(prompt))
        row_prefs.append(pref)
        return ids, out

    out = {}
    if spec.objective == "DPO":
        lw, ll, rw, rl, len_w, len_l = [], [], [], [], [], []
        for p in pairs:
            for resp, lps, refs, lens in ((p["chosen"], lw, rw, len_w), (p["rejected"], ll, rl, len_l)):
                ids, logits = run_row(p["prompt"], resp, p["preference"])
                lps.append(response_logp(logits, ids, len(p["prompt"])))
                with torch.no_grad():
                    refs.append(response_logp(run_model(cfg, ref_W, ids), ids, len(p["prompt"])))
                lens.append(float(len(resp)))
        t = lambda xs: torch.stack(xs) if isinstance(xs[0], torch.Tensor) else torch.tensor(xs, dtype=torch.float64)
        main, delta = dpo_loss(spec, t(lw), t(ll), t(rw), t(rl), t(len_w), t(len_l))
        out["loss/dpo"] = main
        out["info/delta"] = delta.detach()
        norm = spec.dpo_loss == "IPO" and spec.ipo_norm
        ratio_w = (t(lw).detach() - t(rw)) / (t(len_w) if norm else 1)
        ratio_l = (t(ll).detach() - t(rl)) / (t(len_l) if norm else 1)
        out["info/rewards"] = (spec.beta * ratio_w, spec.beta * ratio_l)
    elif spec.objective == "SFT":
        total_lp, n_tok = zero, 0
        for p in pairs:
            ids, logits = run_row(p["prompt"], p["chosen"], p["preference"])
            total_lp = total_lp + response_logp(logits, ids, len(p["prompt"]))
            n_tok += len(p["chosen"])
        main = -total_lp / n_tok
        out["loss/sft"] = main
        out["loss/dpo"] = zero  # always written, 0 for the other objectives
    elif spec.objective == "REWARD":
        score = P["score.weight"]
        per, scores = [], []
        for p in pairs:
            rewards = []
            for resp in (p["chosen"], p["rejected"]):
                _, h = run_row(p["prompt"], resp, p["preference"], hidden=True)
                rewards.append((h[0, -1] * score[0]).sum())
            per.append(-F.logsigmoid(rewards[0] - rewards[1]))
            scores.append([float(r) for r in rewards])
        main = torch.stack(per).mean()
        out["info/rewards"] = ([x[0] for x in scores], [x[1] for x in scores])
        out["loss/reward"] = main
        out["loss/dpo"] = zero  # always written, 0 for the other objectives
    else:
        raise ValueError("unknown objective " + spec.objective)

    if spec.kind == "PMOL":
        groups, balances = [], []
        for m in spec.modules(cfg):
            gs = record[m]
            g_resp = torch.cat([g[mask] for g, mask in zip(gs, resp_masks)])
            prefs = torch.cat([torch.full((int(mask.sum()),), pr, dtype=torch.long)
                               for mask, pr in zip(resp_masks, row_prefs)])
            groups.append(group_loss(spec, g_resp, prefs))
            balances.append(balance_loss(spec, torch.cat(gs)))
        out["loss/group"] = torch.stack(groups).mean()
        out["loss/balance"] = torch.stack(balances).mean()
    else:
        out["loss/group"] = zero
        out["loss/balance"] = zero
    out["loss/total"] = main + spec.group_weight * out["loss/group"] + spec.balance_weight * out["loss/balance"]
    out.update(step_metrics(spec, cfg, pairs, out.get("info/rewards"), record, resp_masks, row_prefs))
    out.pop("info/rewards", None)
    return out


def step_metrics(spec, cfg, pairs, rewards, record, resp_masks, row_prefs):
    """The step's logged figures (scalars), as pmol names them:
    rewards/{chosen,rejected,margins,accuracy}[/<pref>]: means over the pairs (of that
      preference) of the implicit rewards beta*(lp - ref) (per response token with IPO
      length normalisation) or, for REWARD, the value head's scores; accuracy counts
      chosen > rejected. Not for SFT.
    router[/<pref>]/group<k>, .../empty (PMoL): the dense router mass of group k (of the
      empty slots), sum_{i in G_k} g_i, averaged over the response positions (of rows of
      that preference), then over adapted modules."""
    out = {}
    grouped = spec.kind == "PMOL"
    n_pref = spec.n_groups if grouped else max(max(1, len(spec.preference_names)),
                                               max(p["preference"] for p in pairs) + 1)

    def suffix(p):
        if p is None:
            return ""
        name = spec.preference_names[p] if p < len(spec.preference_names) else ""
        return "/" + (name or f"pref{p}")

    prefs_present = [None] + [p for p in range(n_pref) if any(q["preference"] == p for q in pairs)]
    as_t = lambda v: torch.tensor(float(v), dtype=torch.float64)
    if rewards is not None:
        rc, rr = rewards
        for p in prefs_present:
            idx = [i for i, q in enumerate(pairs) if p is None or q["preference"] == p]
            c = sum(float(rc[i]) for i in idx) / len(idx)
            r = sum(float(rr[i]) for i in idx) / len(idx)
            out["rewards/chosen" + suffix(p)] = as_t(c)
            out["rewards/rejected" + suffix(p)] = as_t(r)
            out["rewards/margins" + suffix(p)] = as_t(c - r)
            out["rewards/accuracy" + suffix(p)] = as_t(sum(1.0 for i in idx if float(rc[i]) > float(rr[i])) / len(idx))
    if grouped:
        mods = spec.modules(cfg)
        for p in prefs_present:
            mass = [0.0] * (spec.n_groups + 1)
            for m in mods:
                sel = [g[mask].detach() for g, mask, rp in zip(record[m], resp_masks, row_prefs)
                       if p is None or rp == p]
                g = torch.cat(sel)
                first = 0
                for k, n in enumerate(spec.experts_per_group):
                    mass[k] += float(g[:, first:first + n].sum(-1).mean()) / len(mods)
                    first += n
                mass[-1] += float(g[:, spec.n_experts:].sum(-1).mean()) / len(mods)
            prefix = "router" + suffix(p)
            for k in range(spec.n_groups):
                out[f"{prefix}/group{k}"] = as_t(mass[k])
            out[prefix + "/empty"] = as_t(mass[-1])
    return out


# ---------------------------------------------------------------------------------------
# Jobs.


def check_batch(spec, pairs):
    for i, p in enumerate(pairs):
        if not p["prompt"]:
            raise ValueError(f"pairs[{i}].prompt is empty")
        if spec.kind == "PMOL" and not 0 <= p["preference"] < spec.n_groups:
            raise ValueError(f"pairs[{i}].preference out of range")


def run_job(job):
    with open(job["config"]) as f:
        spec = Spec(parse_textproto(f.read()))
    model_dir = job.get("model") or spec.model_path
    with open(model_dir + "/config.json") as f:
        cfg = json.load(f)
    W = torch_llama.read_safetensors(model_dir + "/model.safetensors")
    with open(job["batch"]) as f:
        pairs = json.load(f)["pairs"]
    check_batch(spec, pairs)
    shapes = spec.trainable_shapes(cfg, W)
    sources = {}
    if job.get("adapter"):
        sources = torch_llama.read_safetensors(job["adapter"])
        extra = sorted(set(sources) - set(shapes))
        if extra:
            raise ValueError(f"{job['adapter']} holds tensors this config does not train: {extra}")
    init = torch_llama.read_safetensors(job["init"]) if job.get("init") else {}
    P = {}
    for name, shape in shapes.items():
        if spec.kind == "FULL" and name in W:
            t = W[name]
        elif name in sources:
            t = sources[name]
        elif name in init:
            t = init[name]
        else:
            raise ValueError(f"no initial value for trainable tensor {name}")
        if list(t.shape) != shape:
            raise ValueError(f"{name}: shape {list(t.shape)}, expected {shape}")
        P[name] = t.clone().requires_grad_(True)
    losses = step_losses(cfg, W, spec, P, pairs)
    losses["loss/total"].backward()
    result = {}
    for name, t in P.items():
        result[name] = t.detach()
        result["grad/" + name] = t.grad if t.grad is not None else torch.zeros_like(t)
    for name, v in losses.items():
        result[name] = v.detach().reshape(v.shape)
    torch_llama.write_safetensors(job["out"], result)


# ---------------------------------------------------------------------------------------
# Self-test: gradcheck and self-consistency.


def tiny_model(seed, layers=1, bias=False, tied=False):
    cfg = {"model_type": "llama", "vocab_size": 13, "hidden_size": 8, "intermediate_size": 12,
           "num_hidden_layers": layers, "num_attention_heads": 2, "num_key_value_heads": 1,
           "head_dim": 4, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
           "tie_word_embeddings": tied, "attention_bias": bias}
    gen = torch.Generator().manual_seed(seed)
    H, I, V, hd = 8, 12, 13, 4
    shapes = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    if not tied:
        shapes["lm_head.weight"] = [V, H]
    for l in range(layers):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": [H], p + "post_attention_layernorm.weight": [H],
                       p + "self_attn.q_proj.weight": [2 * hd, H], p + "self_attn.k_proj.weight": [hd, H],
                       p + "self_attn.v_proj.weight": [hd, H], p + "self_attn.o_proj.weight": [H, 2 * hd],
                       p + "mlp.gate_proj.weight": [I, H], p + "mlp.up_proj.weight": [I, H],
                       p + "mlp.down_proj.weight": [H, I]})
        if bias:
            shapes.update({p + "self_attn.q_proj.bias": [2 * hd], p + "self_attn.k_proj.bias": [hd],
                           p + "self_attn.v_proj.bias": [hd]})
    W = {}
    for n, s in shapes.items():
        t = torch.randn(s, generator=gen, dtype=torch.float64)
        W[n] = 1 + 0.1 * t if "norm" in n else (0.05 * t if n.endswith("bias") else 0.4 * t)
    return cfg, W


def tiny_pairs():
    return [
        {"prompt": [1, 2, 3], "chosen": [4, 5], "rejected": [6, 7, 8], "preference": 0},
        {"prompt": [9], "chosen": [10, 11, 12, 0], "rejected": [2], "preference": 1},
        {"prompt": [5, 5], "chosen": [3], "rejected": [1, 12], "preference": 2},
    ]


def make_spec(text):
    return Spec(parse_textproto(text))


def random_params(spec, cfg, W, seed, router_std=0.8, b_std=0.3):
    gen = torch.Generator().manual_seed(seed)
    P = {}
    for n, s in spec.trainable_shapes(cfg, W).items():
        if spec.kind == "FULL" and n in W:
            P[n] = W[n].clone()
            continue
        std = router_std if n.endswith("router") else (b_std if n.endswith("lora_B") else 1 / math.sqrt(s[-1]))
        P[n] = std * torch.randn(s, generator=gen, dtype=torch.float64)
    return P


def losses_and_grads(cfg, W, spec, P, pairs):
    P = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    L = step_losses(cfg, W, spec, P, pairs)
    L["loss/total"].backward()
    return ({n: v.detach() for n, v in L.items()},
            {n: (t.grad if t.grad is not None else torch.zeros_like(t)) for n, t in P.items()})


class SelfTest:
    def __init__(self):
        self.failures = 0

    def check(self, ok, what):
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            self.failures += 1

    def close(self, a, b, tol, what):
        err = (a - b).abs().max().item() if a.numel() else 0.0
        self.check(err <= tol, f"{what}: max err {err:.3g} (tol {tol:.1g})")

    def same_results(self, r1, r2, tol, what, names=None):
        (l1, g1), (l2, g2) = r1, r2
        for n in ("loss/total", "loss/dpo", "loss/group", "loss/balance"):
            self.close(l1[n], l2[n], tol, f"{what}: {n}")
        for n in (names or g1):
            self.close(g1[n], g2[n], tol, f"{what}: grad/{n}")


BASE = """
model { dtype: "f64" }
adapter { kind: PMOL groups { experts: 2 } groups { experts: 1 } groups { experts: 3 }
          empty_experts: 2 rank: 2 alpha: 5 router_temperature: 0.7 top_k: %d
          target_modules: "q" target_modules: "v_proj" target_modules: "down" }
objective { kind: %s dpo_loss: %s beta: %g label_smoothing: %g ipo_length_normalize: %s
            group_loss_weight: 0.3 group_label_smoothing: 0.2 balance_loss_weight: 0.7 }
"""


def base_text(top_k=0, kind="DPO", loss="SIGMOID", beta=0.5, eps=0.0, norm="false"):
    return BASE % (top_k, kind, loss, beta, eps, norm)


def selftest():
    torch.manual_seed(0)
    T = SelfTest()
    pairs = tiny_pairs()

    # 1. The text-format parser and the defaults.
    s = make_spec('adapter { groups: { experts: 2 } groups < experts: 1 > layers: [0, 1] '
                  'target_modules: ["q", "up_proj"] }  # comment\n objective { beta: 1e-1 }')
    T.check(s.experts_per_group == [2, 1] and s.layers == [0, 1] and s.n_empty == 1
            and s.targets == ["self_attn.q_proj", "mlp.up_proj"] and s.beta == 0.1
            and s.group_smoothing == 0.1 and s.dpo_loss == "SIGMOID" and s.rank == 8,
            "textproto parser and RunConfig defaults")
    s = make_spec("adapter { num_groups: 3 experts_per_group: 2 }")
    T.check(s.experts_per_group == [2, 2, 2] and len(s.targets) == 7, "num_groups x experts_per_group, all targets")

    # 2. gradcheck of the total loss (f64 central differences) for each kind and loss.
    cfg, W = tiny_model(1, layers=2, bias=True)
    cases = [("PMoL dense sigmoid", base_text()),
             ("PMoL top-2 ipo", base_text(top_k=2, loss="IPO")),
             ("PMoL top-1 ipo length-normalised", base_text(top_k=1, loss="IPO", norm="true")),
             ("PMoL dense conservative", base_text(loss="CONSERVATIVE", eps=0.1)),
             ("PMoL top-3 hinge", base_text(top_k=3, loss="HINGE", beta=0.3)),
             ("PMoL SFT", base_text(kind="SFT")),
             ("LoRA sigmoid", base_text().replace("kind: PMOL", "kind: LORA")),
             ("PMoL reward", base_text(kind="REWARD"))]
    for what, text in cases:
        spec = make_spec(text)
        P = random_params(spec, cfg, W, seed=2)
        names = sorted(P)
        if spec.dpo_loss == "HINGE":
            with torch.no_grad():
                d = step_losses(cfg, W, spec, P, pairs)["info/delta"]
            T.check(bool(((1 - spec.beta * d).abs() > 1e-3).all()), f"{what}: away from the hinge kink {d.tolist()}")

        def f(*ts):
            return step_losses(cfg, W, spec, dict(zip(names, ts)), pairs)["loss/total"]

        inputs = tuple(P[n].clone().requires_grad_(True) for n in names)
        # Fast mode checks random projections of the Jacobian (a few finite differences
        # instead of one per parameter); the slow element-wise mode runs on LoRA.
        fast = spec.kind != "LORA"
        ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, raise_exception=False,
                                      fast_mode=fast)
        T.check(ok, f"gradcheck{' (fast mode)' if fast else ''} {what} ({sum(t.numel() for t in inputs)} parameters)")

    # FULL fine-tuning: all base weights train (tied head, 1 layer, fewer parameters).
    cfg1, W1 = tiny_model(3, layers=1, tied=True)
    spec = make_spec(base_text().replace("kind: PMOL", "kind: FULL"))
    names = sorted(W1)

    def f_full(*ts):
        return step_losses(cfg1, W1, spec, dict(zip(names, ts)), pairs)["loss/total"]

    inputs = tuple(W1[n].clone().requires_grad_(True) for n in names)
    ok = torch.autograd.gradcheck(f_full, inputs, eps=1e-6, atol=1e-8, rtol=1e-6, raise_exception=False,
                                  fast_mode=True)
    T.check(ok, f"gradcheck (fast mode) FULL sigmoid ({sum(t.numel() for t in inputs)} parameters)")
    L, G = losses_and_grads(cfg1, W1, spec, {n: W1[n] for n in names}, pairs)
    T.close(L["loss/dpo"], torch.tensor(math.log(2.0), dtype=torch.float64), 1e-14,
            "FULL: policy = reference, so loss/dpo = log 2")
    T.check(float(sum(g.abs().sum() for g in G.values())) > 1e-3, "FULL: gradients are nonzero")

    # 3. Self-consistency.
    spec_dense = make_spec(base_text())
    P = random_params(spec_dense, cfg, W, seed=5)
    dense = losses_and_grads(cfg, W, spec_dense, P, pairs)
    T.same_results(dense, losses_and_grads(cfg, W, make_spec(base_text(top_k=8)), P, pairs), 1e-13,
                   "top_k = all slots equals dense")
    topk = losses_and_grads(cfg, W, make_spec(base_text(top_k=2)), P, pairs)
    T.check((topk[0]["loss/dpo"] - dense[0]["loss/dpo"]).abs().item() > 1e-6, "top_k = 2 differs from dense")

    # Aux losses read the dense g: with only layer 0's q adapted (its input does not
    # depend on any adapter), they are identical with and without top-k.
    first = base_text().replace('target_modules: "v_proj" target_modules: "down"', "layers: 0")
    first_dense = losses_and_grads(cfg, W, make_spec(first), P, pairs)
    first_top1 = losses_and_grads(cfg, W, make_spec(first.replace("top_k: 0", "top_k: 1")), P, pairs)
    T.close(first_top1[0]["loss/group"], first_dense[0]["loss/group"], 1e-14, "top-k leaves loss/group unchanged")
    T.close(first_top1[0]["loss/balance"], first_dense[0]["loss/balance"], 1e-14, "top-k leaves loss/balance unchanged")
    T.check((first_top1[0]["loss/dpo"] - first_dense[0]["loss/dpo"]).abs().item() > 1e-6, "top-1 changes loss/dpo")

    # B = 0: policy = reference, delta = 0.
    P0 = dict(P)
    for n in P0:
        if n.endswith("lora_B"):
            P0[n] = torch.zeros_like(P0[n])
    L0, G0 = losses_and_grads(cfg, W, spec_dense, P0, pairs)
    T.close(L0["info/delta"], torch.zeros(3, dtype=torch.float64), 1e-13, "B = 0 gives delta = 0")
    T.close(L0["loss/dpo"], torch.tensor(math.log(2.0), dtype=torch.float64), 1e-13, "B = 0 gives loss/dpo = log 2")
    T.check(float(G0["model.layers.0.self_attn.q_proj.pmol.lora_B"].abs().max()) > 1e-6,
            "B = 0 still gives a nonzero grad for B")

    # One group of one expert, no empty slot: g = 1, so PMoL equals LoRA with the same A, B.
    one = base_text().replace("groups { experts: 2 } groups { experts: 1 } groups { experts: 3 }",
                              "groups { experts: 1 }").replace("empty_experts: 2", "empty_experts: 0")
    spec_one = make_spec(one)
    pairs0 = [dict(p, preference=0) for p in pairs]
    P1 = random_params(spec_one, cfg, W, seed=6)
    r_pmol = losses_and_grads(cfg, W, spec_one, P1, pairs0)
    spec_lora = make_spec(one.replace("kind: PMOL", "kind: LORA"))
    PL = {n: t for n, t in P1.items() if not n.endswith("router")}
    r_lora = losses_and_grads(cfg, W, spec_lora, PL, pairs0)
    T.same_results(r_pmol, r_lora, 1e-13, "PMoL 1 group x 1 expert, no empty = LoRA", names=sorted(PL))
    T.close(r_pmol[1]["model.layers.1.mlp.down_proj.pmol.router"], torch.zeros(1, 12, dtype=torch.float64), 0,
            "single-slot router gets zero gradient")

    # Conservative with eps = 0 is sigmoid.
    T.same_results(losses_and_grads(cfg, W, make_spec(base_text(loss="CONSERVATIVE", eps=0.0)), P, pairs),
                   dense, 1e-14, "conservative eps=0 equals sigmoid")

    # DPO formulas by hand from the sequence log-probs (scalar math).
    def seq_logps(Pd, use_adapters):
        out = []
        for p in pairs:
            row = []
            for resp in (p["chosen"], p["rejected"]):
                ids = torch.tensor([p["prompt"] + resp])
                logits = run_model(cfg, W, ids, spec_dense if use_adapters else None, Pd, {})
                lsm = torch.log_softmax(logits[0], -1)
                row.append(sum(float(lsm[t - 1, ids[0, t]]) for t in range(len(p["prompt"]), ids.shape[1])))
            out.append(row)
        return out

    with torch.no_grad():
        pol, ref = seq_logps(P, True), seq_logps(P, False)
    sig = lambda v: 1 / (1 + math.exp(-v))
    for loss, eps, norm, b in (("SIGMOID", 0, False, 0.5), ("IPO", 0, False, 0.5), ("IPO", 0, True, 0.5),
                               ("HINGE", 0, False, 0.3), ("CONSERVATIVE", 0.1, False, 0.5)):
        per = []
        for i, p in enumerate(pairs):
            lw, ll, rw, rl = pol[i][0], pol[i][1], ref[i][0], ref[i][1]
            if norm:
                lw, rw, ll, rl = lw / len(p["chosen"]), rw / len(p["chosen"]), ll / len(p["rejected"]), rl / len(p["rejected"])
            d = (lw - rw) - (ll - rl)
            per.append({"SIGMOID": lambda: -math.log(sig(b * d)), "IPO": lambda: (d - 1 / (2 * b)) ** 2,
                        "HINGE": lambda: max(0.0, 1 - b * d),
                        "CONSERVATIVE": lambda: -(1 - eps) * math.log(sig(b * d)) - eps * math.log(sig(-b * d))}[loss]())
        with torch.no_grad():
            got = step_losses(cfg, W, make_spec(base_text(loss=loss, eps=eps, beta=b, norm="true" if norm else "false")),
                              P, pairs)["loss/dpo"]
        T.close(got, torch.tensor(sum(per) / len(per), dtype=torch.float64), 1e-12,
                f"loss/dpo {loss}{' length-normalised' if norm else ''} by hand")

    # Group and balance losses by hand (scalar loops over positions, slots and groups).
    with torch.no_grad():
        rec = {}
        for p in pairs:
            for resp in (p["chosen"], p["rejected"]):
                ids = torch.tensor([p["prompt"] + resp])
                run_model(cfg, W, ids, spec_dense, P, rec)
        mods = spec_dense.modules(cfg)
        groups_of = [[0, 1], [2], [3, 4, 5]]
        empties = [6, 7]
        gsum, bsum = 0.0, 0.0
        for m in mods:
            ce_sum, n_pos, mass = 0.0, 0, [0.0] * 8
            row = 0
            for p in pairs:
                for resp in (p["chosen"], p["rejected"]):
                    g = rec[m][row].tolist()
                    row += 1
                    for t, gt in enumerate(g):
                        for i in range(8):
                            mass[i] += gt[i]
                        if t < len(p["prompt"]):
                            continue
                        free = 1 - sum(gt[e] for e in empties)
                        ce = 0.0
                        for k, members in enumerate(groups_of):
                            y = (0.8 if k == p["preference"] else 0.0) + 0.2 / 3
                            ce -= y * math.log(sum(gt[i] for i in members) / free)
                        ce_sum += ce
                        n_pos += 1
            gsum += ce_sum / n_pos
            cvs = []
            for members in groups_of:
                v = [mass[i] for i in members]
                mu = sum(v) / len(v)
                cvs.append(sum((x - mu) ** 2 for x in v) / len(v) / mu ** 2)
            bsum += sum(cvs) / len(cvs)
    T.close(dense[0]["loss/group"], torch.tensor(gsum / len(mods), dtype=torch.float64), 1e-12, "loss/group by hand")
    T.close(dense[0]["loss/balance"], torch.tensor(bsum / len(mods), dtype=torch.float64), 1e-12, "loss/balance by hand")
    T.close(dense[0]["loss/total"], dense[0]["loss/dpo"] + 0.3 * dense[0]["loss/group"] + 0.7 * dense[0]["loss/balance"],
            1e-14, "loss/total = dpo + 0.3 group + 0.7 balance")

    # The stacked layout: one GEMM pair over all experts (pmol's formula) equals the loop.
    x = torch.randn(5, 8, dtype=torch.float64)
    m = "model.layers.0.self_attn.q_proj"
    g, gk = gate(spec_dense, x @ P[m + ".pmol.router"].T)
    h = x @ P[m + ".pmol.lora_A"].T
    h = h * (gk[:, :6].repeat_interleave(2, dim=1) * spec_dense.alpha / spec_dense.rank)
    T.close(adapter_output(spec_dense, P, m, x, {}), h @ P[m + ".pmol.lora_B"].T, 1e-14,
            "expert loop equals the stacked-GEMM formula")

    # Renaming experts inside a group (A rows, B columns, router rows) changes nothing;
    # swapping groups 0 and 2 together with the preference labels changes nothing.
    def permute(Pd, slot_perm):
        out = {}
        for n, t in Pd.items():
            if n.endswith("router"):
                out[n] = t[slot_perm]
            else:
                ex = [s for s in slot_perm if s < 6]
                rows = torch.tensor([e * 2 + j for e in ex for j in range(2)])
                out[n] = t[rows] if n.endswith("lora_A") else t[:, rows]
        return out

    within = [1, 0, 2, 5, 3, 4, 7, 6]
    r = losses_and_grads(cfg, W, spec_dense, permute(P, within), pairs)
    T.close(r[0]["loss/total"], dense[0]["loss/total"], 1e-13, "permuting experts within groups: same loss")
    swapped_text = base_text().replace("groups { experts: 2 } groups { experts: 1 } groups { experts: 3 }",
                                       "groups { experts: 3 } groups { experts: 1 } groups { experts: 2 }")
    across = [3, 4, 5, 2, 0, 1, 6, 7]
    pairs_sw = [dict(p, preference=2 - p["preference"]) for p in pairs]
    r = losses_and_grads(cfg, W, make_spec(swapped_text), permute(P, across), pairs_sw)
    T.close(r[0]["loss/total"], dense[0]["loss/total"], 1e-13, "swapping groups 0 and 2 with the labels: same loss")
    r = losses_and_grads(cfg, W, spec_dense, P, [dict(p, preference=(p["preference"] + 1) % 3) for p in pairs])
    T.check((r[0]["loss/group"] - dense[0]["loss/group"]).abs().item() > 1e-6, "changing the labels changes loss/group")

    # Right-padding a batch changes no response log-prob (causal attention), so running
    # rows unpadded is the same as pmol's padded batch.
    with torch.no_grad():
        rows = [p["prompt"] + p["chosen"] for p in pairs] + [p["prompt"] + p["rejected"] for p in pairs]
        Tm = max(len(r_) for r_ in rows)
        padded = torch.tensor([r_ + [0] * (Tm - len(r_)) for r_ in rows])
        batch_logits = run_model(cfg, W, padded, spec_dense, P, {})
        err = 0.0
        for i, r_ in enumerate(rows):
            single = run_model(cfg, W, torch.tensor([r_]), spec_dense, P, {})
            err = max(err, (batch_logits[i, :len(r_)] - single[0]).abs().max().item())
    T.check(err < 1e-12, f"right padding leaves the rows' logits unchanged (max err {err:.3g})")

    # Adapters on a layer subset leave the other layers' linears alone: with only layer 1
    # adapted, layer 0's outputs equal the base model's.
    sub = make_spec(base_text().replace("target_modules: \"q\"", "layers: 1 target_modules: \"q\""))
    T.check(sub.modules(cfg) == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                                 "model.layers.1.mlp.down_proj"], "layer subset selects layer 1's modules")

    print(f"{T.failures} failures")
    return T.failures == 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1:] == ["--selftest"]:
        sys.exit(0 if selftest() else 1)
    with open(sys.argv[1]) as f:
        for job in json.load(f):
            run_job(job)

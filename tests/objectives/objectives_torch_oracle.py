#!/usr/bin/python3
"""Independent PyTorch reference of pmol's objectives, for tests/objectives.

Float64 autograd throughout; nothing is shared with the C++ code under test.
- DPO family as TRL's DPOTrainer defines it (dpo_loss): logits = (pc - pr) - (rc - rr);
  "sigmoid" -logsigmoid(b*logits)*(1-ls) - logsigmoid(-b*logits)*ls (ls = 0 for plain
  DPO, ls = eps for conservative), "ipo" (logits - 1/(2b))^2 with TRL's length
  normalisation (log-probs divided by their token counts) when asked, "hinge"
  relu(1 - b*logits); mean over pairs; rewards b*(pc - rc), b*(pr - rr).
- Group soft loss: m = group masses / (1 - empty mass) of g = softmax(z); the value by
  F.cross_entropy(log m, p, label_smoothing=eps) (log_softmax(log m) = log m when
  sum m = 1); the gradient wrt g (as free variables) of -sum_k y_k log m_k, and the
  gradient wrt z of the F.cross_entropy path.
- Balance loss: mean over groups of var(unbiased=False)/mean^2 of per-expert masses.
- Reward: r = h[row] @ w + b, mean -logsigmoid(rc - rr).
- Sequence log-probs: log_softmax + gather; SFT value by F.cross_entropy(ignore_index=-1).

Usage: objectives_torch_oracle.py IN.json OUT.json
"""
import json
import sys

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def dpo(case):
    pc = t(case["pc"]).requires_grad_()
    pr = t(case["pr"]).requires_grad_()
    rc, rr = t(case["rc"]), t(case["rr"])
    beta, ls, kind = case["beta"], case["label_smoothing"], case["loss"]
    c_logps, r_logps, c_ref, r_ref = pc, pr, rc, rr
    if kind == "ipo" and case["ipo_length_normalize"]:
        nc, nr = t(case["nc"]), t(case["nr"])
        c_logps, r_logps, c_ref, r_ref = pc / nc, pr / nr, rc / nc, rr / nr
    logits = (c_logps - r_logps) - (c_ref - r_ref)
    if kind == "sigmoid":
        losses = -F.logsigmoid(beta * logits)
    elif kind == "conservative":
        losses = -F.logsigmoid(beta * logits) * (1 - ls) - F.logsigmoid(-beta * logits) * ls
    elif kind == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    elif kind == "hinge":
        losses = torch.relu(1 - beta * logits)
    else:
        raise ValueError(kind)
    loss = losses.mean()
    loss.backward()
    rew_c = beta * (c_logps - c_ref).detach()
    rew_r = beta * (r_logps - r_ref).detach()
    return {"loss": loss.item(), "d_pc": pc.grad.tolist(), "d_pr": pr.grad.tolist(),
            "rewards_chosen": rew_c.tolist(), "rewards_rejected": rew_r.tolist(),
            "accuracy": (rew_c > rew_r).double().mean().item()}


def group_masses(g, experts_per_group, num_empty):
    cols, first = [], 0
    for e in experts_per_group:
        cols.append(g[:, first:first + e].sum(-1))
        first += e
    s = torch.stack(cols, -1)
    empty = g[:, first:first + num_empty].sum(-1)
    return s / (1 - empty)[:, None]


def group(case):
    epg, ne, eps = case["experts_per_group"], case["num_empty"], case["eps"]
    labels = torch.tensor(case["labels"], dtype=torch.long)
    keep = labels >= 0
    z = t(case["z"]).requires_grad_()
    m = group_masses(torch.softmax(z, -1), epg, ne)
    ce = F.cross_entropy(torch.log(m[keep]), labels[keep], label_smoothing=eps)
    ce.backward()
    # Literal formula, gradient wrt g as free variables.
    g = torch.softmax(z.detach(), -1).requires_grad_()
    mg = group_masses(g, epg, ne)
    P = len(epg)
    y = (1 - eps) * F.one_hot(labels[keep], P).double() + eps / P
    lit = -(y * torch.log(mg[keep])).sum(-1).mean()
    lit.backward()
    return {"loss": ce.item(), "loss_literal": lit.item(), "dg": g.grad.flatten().tolist(),
            "dz": z.grad.flatten().tolist()}


def balance(case):
    epg = case["experts_per_group"]
    g = t(case["g"]).requires_grad_()
    valid = t(case["valid"])
    mass = (g * valid[:, None]).sum(0)
    total, first = (g * 0).sum(), 0  # keeps the graph when no group counts
    for e in epg:
        m = mass[first:first + e]
        first += e
        if e > 1 and m.mean().item() != 0:
            total = total + m.var(unbiased=False) / m.mean() ** 2
    loss = total / len(epg)
    loss.backward()
    return {"loss": loss.item(), "dg": g.grad.flatten().tolist()}


def reward(case):
    h = t(case["h"]).requires_grad_()
    w = t(case["w"]).requires_grad_()
    b = t(case["b"]).requires_grad_()
    r = h @ w + b
    rc, rr = r[case["chosen"]], r[case["rejected"]]
    loss = -F.logsigmoid(rc - rr).mean()
    loss.backward()
    return {"loss": loss.item(), "dh": h.grad.flatten().tolist(), "dw": w.grad.tolist(),
            "db": b.grad.item(), "accuracy": (rc > rr).double().mean().item()}


def sequence(case):
    logits = t(case["logits"]).requires_grad_()
    R, T, V = logits.shape
    targets = torch.tensor(case["targets"], dtype=torch.long).view(R, T)
    mask = targets >= 0
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    sums = (logp * mask).sum(-1)
    (sums * t(case["cotangent"])).sum().backward()
    sft = F.cross_entropy(logits.detach().view(-1, V), targets.view(-1), ignore_index=-1)
    return {"sums": sums.tolist(), "dlogits": logits.grad.flatten().tolist(), "sft": sft.item()}


def main():
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    out = {
        "dpo": [dpo(c) for c in cases["dpo"]],
        "group": [group(c) for c in cases["group"]],
        "balance": [balance(c) for c in cases["balance"]],
        "reward": [reward(c) for c in cases["reward"]],
        "sequence": [sequence(c) for c in cases["sequence"]],
    }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

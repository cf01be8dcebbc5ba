"""PyTorch oracle for tests/optim: AdamW, learning-rate schedules, gradient clipping.

Usage: torch_optim_oracle.py JOB.json OUT.json

JOB holds any of:
  "adamw":     [{"name", "dtype" ("float32"|"float64"), "lrs": [lr per step], "beta1",
                 "beta2", "eps", "weight_decay",
                 "params": [{"name", "shape", "init": [...], "decay": bool,
                             "grads": [[...] per step]}]}]
  "schedules": [{"kind" ("constant"|"linear"|"cosine"), "lr", "warmup_steps",
                 "total_steps", "min_lr_ratio", "steps": [0-based optimizer steps]}]
  "clip":      [{"dtype", "max_norm", "grads": [{"shape", "values"}]}]
OUT mirrors it: adamw[i] = {"params": {name: [values after each step]},
                            "exp_avg": {name: final}, "exp_avg_sq": {name: final}};
schedules[i] = [lr per requested step]; clip[i] = {"norm", "grads": [clipped values]}.

AdamW is torch.optim.AdamW with two param groups (decay and weight_decay = 0), foreach
off, the group lr set before each step. Schedules are Hugging Face transformers' lambdas
(copied below from transformers/optimization.py; if transformers is installed they are
also checked against it), min_lr_ratio applied as in
get_cosine_with_min_lr_schedule_with_warmup, and run through torch's LambdaLR.
"""
import json
import math
import sys

import torch


def dtype_of(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def run_adamw(case):
    dt = dtype_of(case["dtype"])
    params, decay, no_decay = [], [], []
    for p in case["params"]:
        t = torch.tensor(p["init"], dtype=torch.float64).to(dt).reshape(p["shape"])
        t.requires_grad_(True)
        params.append((p, t))
        (decay if p["decay"] else no_decay).append(t)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": case["weight_decay"]})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=case["lrs"][0], betas=(case["beta1"], case["beta2"]),
                            eps=case["eps"], foreach=False)
    out = {"params": {p["name"]: [] for p, _ in params}, "exp_avg": {}, "exp_avg_sq": {}}
    for step, lr in enumerate(case["lrs"]):
        for p, t in params:
            t.grad = torch.tensor(p["grads"][step], dtype=torch.float64).to(dt).reshape(p["shape"])
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        for p, t in params:
            out["params"][p["name"]].append(t.detach().reshape(-1).tolist())
    for p, t in params:
        st = opt.state[t]
        out["exp_avg"][p["name"]] = st["exp_avg"].reshape(-1).tolist()
        out["exp_avg_sq"][p["name"]] = st["exp_avg_sq"].reshape(-1).tolist()
    return out


# --- transformers/optimization.py (v4.x), the lambdas verbatim -------------------------
def hf_constant_lambda(current_step, *, num_warmup_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1.0, num_warmup_steps))
    return 1.0


def hf_linear_lambda(current_step, *, num_warmup_steps, num_training_steps):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    return max(
        0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps))
    )


def hf_cosine_lambda(current_step, *, num_warmup_steps, num_training_steps, num_cycles=0.5):
    if current_step < num_warmup_steps:
        return float(current_step) / float(max(1, num_warmup_steps))
    progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
# ---------------------------------------------------------------------------------------


def schedule_lambda(case):
    w, n, r = case["warmup_steps"], case["total_steps"], case["min_lr_ratio"]
    kind = case["kind"]
    if kind == "constant":
        return lambda s: hf_constant_lambda(s, num_warmup_steps=w)
    base = {"linear": hf_linear_lambda, "cosine": hf_cosine_lambda}[kind]

    def fn(s):
        f = base(s, num_warmup_steps=w, num_training_steps=n)
        if s < w or r == 0:
            return f
        # get_cosine_with_min_lr_schedule_with_warmup: factor * (1 - min_lr_rate) + min_lr_rate
        return f * (1 - r) + r
    return fn


def check_against_transformers(case, fn):
    try:
        import transformers.optimization as hf
    except Exception:
        return
    w, n = case["warmup_steps"], case["total_steps"]
    if case["min_lr_ratio"] != 0:
        return
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = {"constant": lambda: hf.get_constant_schedule_with_warmup(opt, w),
             "linear": lambda: hf.get_linear_schedule_with_warmup(opt, w, n),
             "cosine": lambda: hf.get_cosine_schedule_with_warmup(opt, w, n)}[case["kind"]]()
    for s in range(n + 1):
        assert sched.lr_lambdas[0](s) == fn(s), (case, s)


def run_schedule(case):
    fn = schedule_lambda(case)
    check_against_transformers(case, fn)
    # LambdaLR: lr of scheduler epoch s = base_lr * lambda(s); the optimizer's step s
    # (0-based) uses the rate after s scheduler.step() calls.
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=case["lr"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    wanted = sorted(set(case["steps"]))
    lrs = {}
    last = max(wanted) if wanted else 0
    for s in range(last + 1):
        if s in wanted:
            lrs[s] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    return [lrs[s] for s in case["steps"]]


def run_clip(case):
    dt = dtype_of(case["dtype"])
    params = []
    for g in case["grads"]:
        p = torch.zeros(g["shape"], dtype=dt, requires_grad=True)
        p.grad = torch.tensor(g["values"], dtype=torch.float64).to(dt).reshape(g["shape"])
        params.append(p)
    norm = torch.nn.utils.clip_grad_norm_(params, case["max_norm"])
    return {"norm": float(norm), "grads": [p.grad.reshape(-1).tolist() for p in params]}


def main():
    with open(sys.argv[1]) as f:
        job = json.load(f)
    out = {
        "adamw": [run_adamw(c) for c in job.get("adamw", [])],
        "schedules": [run_schedule(c) for c in job.get("schedules", [])],
        "clip": [run_clip(c) for c in job.get("clip", [])],
    }
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

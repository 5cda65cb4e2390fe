#!/usr/bin/env python3
"""Golden learning rates of PyTorch's schedulers for lamina-train's schedule tests.

Run where PyTorch is installed (written against torch 2.11; needs nothing else):
    python3 tools/golden/lr_schedules.py crates/lamina-train/tests/fixtures/lr_schedules.json

For each case it builds torch.optim.SGD over one dummy parameter with lr 0.1, attaches the
scheduler and records optimizer.param_groups[0]['lr'] before each of 100 scheduler.step() calls
(so lrs[0] is the rate after construction and lrs[i] the rate after i steps). ReduceLROnPlateau
cases are stepped with the fixed metric sequence stored beside their rates. The output is JSON:
    {"<case>": {"config": "<the scheduler call>", "torch": "<version>",
                "lrs": [100 floats], "metrics": [100 floats] (plateau cases only)}}
Python's float repr round-trips, so the file holds PyTorch's doubles exactly.

The case names are matched by the table in crates/lamina-train/src/schedule.rs (its tests fail
when a case is in one and not the other).
"""
import json
import sys
import warnings

import torch
from torch.optim import SGD
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    OneCycleLR,
    ReduceLROnPlateau,
    StepLR,
)

STEPS = 100
BASE_LR = 0.1


def falling_metric():
    """A validation loss: improves clearly, changes by less than the 1e-4 relative threshold,
    gets worse, improves now and then; repeated."""
    seq, v = [], 1.0
    for i in range(STEPS):
        block = (i // 10) % 4
        if block == 0:
            v = v * 0.8
        elif block == 1:
            v = v * (1 - 5e-5)
        elif block == 2:
            v = v * 1.02
        elif i % 3 == 0:
            v = v * 0.97
        seq.append(v)
    return seq


def rising_metric():
    """A validation accuracy: 1 - falling_metric()."""
    return [1.0 - m for m in falling_metric()]


# name -> (source text of the scheduler call, constructor, metric sequence or None)
CASES = {
    "constant": ("LambdaLR(opt, lambda _: 1.0)", lambda o: LambdaLR(o, lambda _: 1.0), None),
    "step_10_0.5": ("StepLR(opt, step_size=10, gamma=0.5)", lambda o: StepLR(o, step_size=10, gamma=0.5), None),
    "step_7_default": ("StepLR(opt, step_size=7)", lambda o: StepLR(o, step_size=7), None),
    "exponential_0.97": ("ExponentialLR(opt, gamma=0.97)", lambda o: ExponentialLR(o, gamma=0.97), None),
    "exponential_1.01": ("ExponentialLR(opt, gamma=1.01)", lambda o: ExponentialLR(o, gamma=1.01), None),
    "cosine_30_0.001": (
        "CosineAnnealingLR(opt, T_max=30, eta_min=0.001)",
        lambda o: CosineAnnealingLR(o, T_max=30, eta_min=0.001),
        None,
    ),
    "cosine_100_default": ("CosineAnnealingLR(opt, T_max=100)", lambda o: CosineAnnealingLR(o, T_max=100), None),
    "cosine_7_0.01": (
        "CosineAnnealingLR(opt, T_max=7, eta_min=0.01)",
        lambda o: CosineAnnealingLR(o, T_max=7, eta_min=0.01),
        None,
    ),
    "cosine_1_0.001": (
        "CosineAnnealingLR(opt, T_max=1, eta_min=0.001)",
        lambda o: CosineAnnealingLR(o, T_max=1, eta_min=0.001),
        None,
    ),
    "linear_0.1_10": (
        "LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=10)",
        lambda o: LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
        None,
    ),
    "linear_default": ("LinearLR(opt)", lambda o: LinearLR(o), None),
    "linear_0.5_1": (
        "LinearLR(opt, start_factor=0.5, total_iters=1)",
        lambda o: LinearLR(o, start_factor=0.5, total_iters=1),
        None,
    ),
    "onecycle_cos": ("OneCycleLR(opt, max_lr=1.0, total_steps=100)", lambda o: OneCycleLR(o, max_lr=1.0, total_steps=100), None),
    "onecycle_linear": (
        "OneCycleLR(opt, max_lr=1.0, total_steps=100, anneal_strategy='linear')",
        lambda o: OneCycleLR(o, max_lr=1.0, total_steps=100, anneal_strategy="linear"),
        None,
    ),
    "onecycle_three_phase": (
        "OneCycleLR(opt, max_lr=1.0, total_steps=100, three_phase=True)",
        lambda o: OneCycleLR(o, max_lr=1.0, total_steps=100, three_phase=True),
        None,
    ),
    "onecycle_three_phase_linear": (
        "OneCycleLR(opt, max_lr=1.0, total_steps=100, anneal_strategy='linear', three_phase=True)",
        lambda o: OneCycleLR(o, max_lr=1.0, total_steps=100, anneal_strategy="linear", three_phase=True),
        None,
    ),
    "onecycle_custom": (
        "OneCycleLR(opt, max_lr=0.5, total_steps=120, pct_start=0.25, div_factor=10.0, final_div_factor=100.0)",
        lambda o: OneCycleLR(o, max_lr=0.5, total_steps=120, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
        None,
    ),
    "plateau_min_rel": (
        "ReduceLROnPlateau(opt, mode='min', factor=0.5, patience=3, threshold=1e-4, threshold_mode='rel', cooldown=2, min_lr=0.001)",
        lambda o: ReduceLROnPlateau(
            o, mode="min", factor=0.5, patience=3, threshold=1e-4, threshold_mode="rel", cooldown=2, min_lr=0.001
        ),
        falling_metric(),
    ),
    "plateau_max_abs": (
        "ReduceLROnPlateau(opt, mode='max', factor=0.3, patience=2, threshold=0.01, threshold_mode='abs', cooldown=0, min_lr=0.0)",
        lambda o: ReduceLROnPlateau(
            o, mode="max", factor=0.3, patience=2, threshold=0.01, threshold_mode="abs", cooldown=0, min_lr=0.0
        ),
        rising_metric(),
    ),
    "plateau_default": ("ReduceLROnPlateau(opt)", lambda o: ReduceLROnPlateau(o), falling_metric()),
    "plateau_min_lr_clamp": (
        "ReduceLROnPlateau(opt, factor=0.5, patience=1, min_lr=0.01)",
        lambda o: ReduceLROnPlateau(o, factor=0.5, patience=1, min_lr=0.01),
        falling_metric(),
    ),
    # The reduction from 0.0125 to min_lr is 5e-9, below eps=1e-8: PyTorch skips it.
    "plateau_min_lr_eps": (
        "ReduceLROnPlateau(opt, factor=0.5, patience=1, min_lr=0.012499995)",
        lambda o: ReduceLROnPlateau(o, factor=0.5, patience=1, min_lr=0.012499995),
        falling_metric(),
    ),
    "plateau_tiny_factor": (
        "ReduceLROnPlateau(opt, factor=1 - 1e-8, patience=0)",
        lambda o: ReduceLROnPlateau(o, factor=1 - 1e-8, patience=0),
        falling_metric(),
    ),
}


def record(make, metrics):
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = SGD([param], lr=BASE_LR)
    sched = make(opt)
    lrs = []
    for i in range(STEPS):
        lr = opt.param_groups[0]["lr"]
        assert isinstance(lr, float), f"lr is a {type(lr).__name__}, expected a Python float"
        lrs.append(lr)
        opt.step()  # no gradient: changes nothing, but keeps the step order PyTorch expects
        if metrics is None:
            sched.step()
        else:
            sched.step(metrics[i])
    return lrs


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUTPUT.json")
    warnings.simplefilter("error")  # a deprecation or misuse warning means the case is wrong
    out = {}
    for name, (config, make, metrics) in CASES.items():
        case = {"config": config, "torch": torch.__version__, "lrs": record(make, metrics)}
        if metrics is not None:
            case["metrics"] = metrics
        out[name] = case
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"wrote {len(out)} cases of {STEPS} steps to {sys.argv[1]} (torch {torch.__version__})")


if __name__ == "__main__":
    main()

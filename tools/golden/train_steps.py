#!/usr/bin/env python3
"""Golden training trajectories from PyTorch (float64) for lamina-train's tests.

Run where PyTorch is installed (the GPU machine has it):
    python3 tools/golden/train_steps.py crates/lamina-train/tests/fixtures/train_steps.safetensors

Cases:
  opt.<name>   the seed MLP (784-256-swish-128-swish-10, batch 32, sparse cross-entropy) trained
               5 steps by each optimizer (with and without weight decay)
  loss.<name>  a small MLP trained 5 steps (SGD with momentum) with each loss
  bn_mlp       DESIGN.md's bn_mlp with dropout off, Adam, 5 steps (BatchNorm statistics included)
  readme_cnn   DESIGN.md's readme_cnn at batch 4 with dropout off, Adam, 5 steps
For each: `<case>.init.<param>` (float32 values), batches `<case>.x<k>`/`<case>.y<k>`, the loss of
each step `<case>.loss` and the parameters after 5 steps `<case>.after.<param>` (for very large
weights only the first rows, key suffix `.rows`). Parameter names equal lamina's (layer name +
PyTorch's state_dict name). The file is written without the safetensors package.
"""
import json
import struct
import sys
from collections import OrderedDict

import torch
import torch.nn as nn

torch.set_default_dtype(torch.float64)
tensors = {}
ROWS = 8  # rows kept of weights larger than BIG
BIG = 100_000


def put(name, t, dtype="F64"):
    t = t.detach().cpu().clone().contiguous()
    if dtype == "F32":
        t = t.to(torch.float32)
    elif dtype == "I64":
        t = t.to(torch.int64)
    else:
        t = t.to(torch.float64)
    tensors[name] = (dtype, t)


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def seq(*layers):
    return nn.Sequential(OrderedDict(layers))


def init_f32(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(f32(p))


def record(case, model, batches, make_opt, loss_fn, lbfgs=False, shared=None):
    """`shared`: key prefix under which the initial weights and the batches are stored once for
    several cases (the optimizer cases all start from the same seed MLP and batches)."""
    data = shared or case
    if f"{data}.x0" not in tensors:
        put_params(f"{data}.init", model)
        for k, (x, y) in enumerate(batches):
            put(f"{data}.x{k}", x, "F32")
            put(f"{data}.y{k}", y, "I64" if y.dtype == torch.int64 else "F64")
    opt = make_opt(model.parameters())
    losses = []
    for x, y in batches:
        if lbfgs:
            def closure():
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss
            losses.append(float(opt.step(closure)))
        else:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss))
    put(f"{case}.loss", torch.tensor(losses))
    put_params(f"{case}.after", model)


def put_params(prefix, model):
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        if v.numel() > BIG:
            put(f"{prefix}.{k}.rows", v[:ROWS], "F32")
            if prefix.endswith("init"):
                put(f"{prefix}.{k}", v, "F32")
        else:
            put(f"{prefix}.{k}", v, "F32" if prefix.endswith("init") else "F64")


def seed_mlp():
    torch.manual_seed(1)
    m = seq(("dense1", nn.Linear(784, 256)), ("swish1", nn.SiLU()), ("dense2", nn.Linear(256, 128)),
            ("swish2", nn.SiLU()), ("output", nn.Linear(128, 10)))
    init_f32(m, None)
    return m


torch.manual_seed(0)
seed_batches = [(f32(torch.randn(32, 784)), torch.randint(0, 10, (32,))) for _ in range(5)]
ce = nn.CrossEntropyLoss()
optimizers = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "rmsprop_centered": lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "adagrad_decay_wd": lambda p: torch.optim.Adagrad(p, lr=1e-2, lr_decay=0.1, weight_decay=1e-3),
    "adadelta": lambda p: torch.optim.Adadelta(p, lr=1.0),
    "adadelta_wd": lambda p: torch.optim.Adadelta(p, lr=1.0, rho=0.8, weight_decay=1e-3),
    "nadam": lambda p: torch.optim.NAdam(p, lr=2e-3),
    "nadam_wd": lambda p: torch.optim.NAdam(p, lr=2e-3, weight_decay=1e-2),
}
for name, make in optimizers.items():
    m = seed_mlp()
    record(f"opt.{name}", m, seed_batches, make, ce, shared="opt")
m = seed_mlp()
record("opt.lbfgs", m, seed_batches, lambda p: torch.optim.LBFGS(p, lr=1, max_iter=5, history_size=10, line_search_fn="strong_wolfe"), ce, lbfgs=True, shared="opt")


def tiny(k, sigmoid=False):
    torch.manual_seed(2)
    layers = [("dense1", nn.Linear(6, 8)), ("relu1", nn.ReLU()), ("output", nn.Linear(8, k))]
    if sigmoid:
        layers.append(("sig", nn.Sigmoid()))
    m = seq(*layers)
    init_f32(m, None)
    return m


torch.manual_seed(3)
xs = [f32(torch.randn(16, 6)) for _ in range(5)]
sgd = lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)
loss_cases = {
    "ce_probs": (4, False, nn.CrossEntropyLoss(), lambda: f32(torch.softmax(torch.randn(16, 4), -1))),
    "sparse_ce": (4, False, nn.CrossEntropyLoss(), lambda: torch.randint(0, 4, (16,))),
    "categorical": (4, False, nn.CrossEntropyLoss(), lambda: torch.nn.functional.one_hot(torch.randint(0, 4, (16,)), 4).to(torch.float64)),
    "bce": (1, True, nn.BCELoss(), lambda: torch.randint(0, 2, (16, 1)).to(torch.float64)),
    "bce_logits": (3, False, nn.BCEWithLogitsLoss(), lambda: f32(torch.rand(16, 3))),
    "mse": (2, False, nn.MSELoss(), lambda: f32(torch.randn(16, 2))),
    "mae": (2, False, nn.L1Loss(), lambda: f32(torch.randn(16, 2))),
    "huber": (2, False, nn.HuberLoss(delta=0.5), lambda: f32(torch.randn(16, 2))),
}
for name, (k, sig, fn, target) in loss_cases.items():
    torch.manual_seed(4)
    batches = [(x, target()) for x in xs]
    record(f"loss.{name}", tiny(k, sig), batches, sgd, fn)

torch.manual_seed(5)
bn = seq(("dense1", nn.Linear(64, 64)), ("relu1", nn.ReLU()), ("drop", nn.Dropout(0.0)), ("dense2", nn.Linear(64, 128)),
         ("leaky", nn.LeakyReLU(0.01)), ("bn", nn.BatchNorm1d(128, eps=1e-5, momentum=0.1)), ("dense3", nn.Linear(128, 64)),
         ("elu", nn.ELU(1.0)), ("output", nn.Linear(64, 10)))
init_f32(bn, None)
bn_batches = [(f32(torch.randn(32, 64)), torch.randint(0, 10, (32,))) for _ in range(5)]
record("bn_mlp", bn.train(), bn_batches, lambda p: torch.optim.Adam(p, lr=1e-3), ce)

torch.manual_seed(6)
cnn = seq(("conv1", nn.Conv2d(3, 32, 3, 1, 1)), ("relu1", nn.ReLU()), ("conv2", nn.Conv2d(32, 32, 3, 2, 1)), ("relu2", nn.ReLU()),
          ("conv3", nn.Conv2d(32, 64, 3, 1, 1)), ("relu3", nn.ReLU()), ("conv4", nn.Conv2d(64, 64, 3, 2, 1)), ("relu4", nn.ReLU()),
          ("flatten", nn.Flatten()), ("dense1", nn.Linear(4096, 128)), ("relu5", nn.ReLU()), ("drop", nn.Dropout(0.0)),
          ("output", nn.Linear(128, 10)))
init_f32(cnn, None)
cnn_batches = [(f32(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,))) for _ in range(5)]
record("readme_cnn", cnn.train(), cnn_batches, lambda p: torch.optim.Adam(p, lr=1e-3), ce)

header, blobs, offset = {}, [], 0
fmt = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}
for name in sorted(tensors):
    dtype, t = tensors[name]
    data = t.numpy().astype(fmt[dtype]).tobytes()
    header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
header["__metadata__"] = {"torch": torch.__version__, "script": "tools/golden/train_steps.py"}
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for b in blobs:
        f.write(b)
print(f"wrote {len(tensors)} tensors ({offset / 1e6:.1f} MB) to {sys.argv[1]} with torch {torch.__version__}")

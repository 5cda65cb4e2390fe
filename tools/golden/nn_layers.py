#!/usr/bin/env python3
"""Golden forward outputs of PyTorch modules for lamina-nn's layer tests.

Run where PyTorch is installed (the GPU machine has it):
    python3 tools/golden/nn_layers.py crates/lamina-nn/tests/fixtures/nn_layers.safetensors

For each case it stores `<case>.x` (input), `<case>.<param>` (weights, under lamina's parameter
names, in PyTorch's layout), `<case>.y` (output) and for BatchNorm in training the running
statistics after the step (`<case>.running_mean_after`, ...). Inputs and weights are float32
values; outputs are computed in float64 from them and stored as float64. No dependency beyond
torch: the safetensors file is written by hand.
"""
import json
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
tensors = {}


def f32(t):
    return t.to(torch.float32).to(torch.float64)


def put(name, t):
    tensors[name] = t.detach().to(torch.float64).clone().contiguous()  # clone: buffers change in place


def case(name, module, x, params=None, fn=None, train=False, extra=None):
    module = module.to(torch.float64)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(f32(torch.randn_like(p) * 0.5))
        if extra:
            extra(module)
    module.train(train)
    x = f32(x)
    put(f"{name}.x", x)
    for k, v in module.state_dict().items():
        if k == "num_batches_tracked":
            continue
        put(f"{name}.{k}", v)
    with torch.no_grad():
        y = fn(module, x) if fn else module(x)
    put(f"{name}.y", y)
    if train and hasattr(module, "running_mean"):
        put(f"{name}.running_mean_after", module.running_mean)
        put(f"{name}.running_var_after", module.running_var)


def bn_stats(m):
    m.running_mean.copy_(f32(torch.randn_like(m.running_mean)))
    m.running_var.copy_(f32(torch.rand_like(m.running_var) + 0.5))


case("dense", nn.Linear(5, 4), torch.randn(3, 5))
case("dense_rank3", nn.Linear(12, 6), torch.randn(2, 3, 4), fn=lambda m, x: m(x.flatten(1)))
case("conv_s2_p1", nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.randn(2, 3, 7, 6))
case("conv_groups2_d2", nn.Conv2d(4, 6, 3, stride=1, padding=2, dilation=2, groups=2), torch.randn(2, 4, 6, 6))
case("conv_nobias", nn.Conv2d(2, 3, 2, stride=1, padding=0, bias=False), torch.randn(1, 2, 5, 4))
case("maxpool_2", nn.MaxPool2d(2, 2), torch.randn(2, 3, 6, 6))
case("maxpool_3_s2_p1", nn.MaxPool2d(3, 2, padding=1), torch.randn(2, 2, 7, 5))
case("avgpool_2", nn.AvgPool2d(2, 2), torch.randn(2, 3, 6, 6))
case("avgpool_3_s2_p1", nn.AvgPool2d(3, 2, padding=1), torch.randn(2, 2, 7, 5))
case("batchnorm2d_train", nn.BatchNorm2d(3, eps=1e-5, momentum=0.1), torch.randn(4, 3, 5, 5) * 2 + 1, train=True, extra=bn_stats)
case("batchnorm2d_eval", nn.BatchNorm2d(3, eps=1e-5, momentum=0.1), torch.randn(4, 3, 5, 5), train=False, extra=bn_stats)
case("batchnorm1d_train", nn.BatchNorm1d(5, eps=1e-3, momentum=0.3), torch.randn(8, 5), train=True, extra=bn_stats)
case("batchnorm1d_eval", nn.BatchNorm1d(5, eps=1e-3, momentum=0.3), torch.randn(8, 5), train=False, extra=bn_stats)
case("layernorm", nn.LayerNorm(6, eps=1e-5), torch.randn(3, 4, 6))
case("gelu", nn.GELU(), torch.randn(3, 7) * 2)
case("swish", nn.SiLU(), torch.randn(3, 7) * 2)
case("elu", nn.ELU(alpha=0.7), torch.randn(3, 7) * 2)
case("leaky_relu", nn.LeakyReLU(0.01), torch.randn(3, 7) * 2)
case("sigmoid", nn.Sigmoid(), torch.randn(3, 7) * 2)
case("tanh", nn.Tanh(), torch.randn(3, 7) * 2)
case("softmax", nn.Softmax(dim=-1), torch.randn(3, 7) * 2)
case("embedding", nn.Embedding(10, 4), torch.randint(0, 10, (3, 5)).to(torch.float64), fn=lambda m, x: m(x.long()))
case("prelu", nn.PReLU(3), torch.randn(4, 3, 5))
case("glu", nn.Linear(6, 8), torch.randn(5, 6), fn=lambda m, x: F.glu(m(x), dim=-1))
case("attention", nn.MultiheadAttention(8, 2, batch_first=True), torch.randn(2, 5, 8),
     fn=lambda m, x: m(x, x, x, need_weights=False)[0])
case("attention_causal", nn.MultiheadAttention(8, 4, batch_first=True), torch.randn(2, 5, 8),
     fn=lambda m, x: m(x, x, x, need_weights=False,
                       attn_mask=torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1))[0])

header = {}
blobs = []
offset = 0
for name in sorted(tensors):
    data = tensors[name].numpy().astype("<f8").tobytes()
    header[name] = {"dtype": "F64", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
header["__metadata__"] = {"torch": torch.__version__, "script": "tools/golden/nn_layers.py"}
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(h)))
    f.write(h)
    for b in blobs:
        f.write(b)
print(f"wrote {len(tensors)} tensors to {sys.argv[1]} with torch {torch.__version__}")

#!/usr/bin/env python3
"""Golden PyTorch ONNX exports for lamina-onnx's import tests.

Run where PyTorch (with onnx and onnxscript for the default exporter) is installed:
    python3 tools/golden/onnx_torch_exports.py crates/lamina-onnx/tests/fixtures

Builds a small MLP (Linear, BatchNorm1d, ReLU, SiLU, LeakyReLU, Softmax) and a small CNN (Conv2d,
BatchNorm2d, ReLU, MaxPool2d, ELU, AvgPool2d, Flatten, Linear) with fixed seeds and non-trivial
BatchNorm statistics, and exports each with `torch.onnx.export` at opset 17, once with the legacy
TorchScript exporter (`dynamo=False`: Gemm with transB, Flatten) and once with the default
(dynamo) exporter when it works. Writes NAME_legacy.onnx, NAME_dynamo.onnx and NAME.safetensors
holding `x` (float32 values) and `y` (the eval-mode output computed in float64 from the same
float32 weights, stored as F64). The safetensors file is written by hand (no dependency beyond
torch).
"""
import json
import pathlib
import struct
import sys

import torch
import torch.nn as nn

out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)


def randomise(model):
    """Weights rounded to float32, BatchNorm statistics away from (0, 1)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.5)
                m.running_var.copy_(torch.rand_like(m.running_var) + 0.5)
                m.weight.copy_(1 + 0.3 * torch.randn_like(m.weight))
                m.bias.copy_(0.3 * torch.randn_like(m.bias))
    model.eval()
    return model


def mlp():
    torch.manual_seed(1)
    m = nn.Sequential()
    m.add_module("fc1", nn.Linear(8, 16))
    m.add_module("bn1", nn.BatchNorm1d(16))
    m.add_module("relu1", nn.ReLU())
    m.add_module("fc2", nn.Linear(16, 12))
    m.add_module("act2", nn.SiLU())
    m.add_module("fc3", nn.Linear(12, 10))
    m.add_module("act3", nn.LeakyReLU(0.1))
    m.add_module("out", nn.Linear(10, 4))
    m.add_module("softmax", nn.Softmax(dim=1))
    return randomise(m), torch.randn(3, 8)


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=1, padding=1, bias=False)
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(8 * 3 * 3, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool2(nn.functional.elu(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


def cnn():
    torch.manual_seed(2)
    return randomise(Cnn()), torch.randn(2, 3, 12, 12)


def save(path, tensors, meta):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().numpy().astype("<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


for name, make in [("mlp", mlp), ("cnn", cnn)]:
    model, x = make()
    with torch.no_grad():
        y = model.double()(x.double())
    model.float()
    save(out / f"{name}.safetensors", {"x": x.double(), "y": y},
         {"torch": torch.__version__, "script": "tools/golden/onnx_torch_exports.py"})
    kw = dict(opset_version=17, input_names=["x"], output_names=["y"])
    torch.onnx.export(model, (x,), str(out / f"{name}_legacy.onnx"), dynamo=False, **kw)
    print(f"{name}: legacy export ok")
    try:
        torch.onnx.export(model, (x,), str(out / f"{name}_dynamo.onnx"), dynamo=True,
                          external_data=False, **kw)
        print(f"{name}: dynamo export ok")
    except Exception as e:  # the default exporter is a bonus; the legacy one is the baseline
        print(f"{name}: dynamo export failed: {type(e).__name__}: {e}")
    for f in sorted(out.glob(f"{name}*")):
        print(f"  {f.name}: {f.stat().st_size} bytes")

try:
    import onnx
    for f in sorted(out.glob("*.onnx")):
        m = onnx.load(str(f))
        print(f.name, "opsets", [(o.domain, o.version) for o in m.opset_import])
        for n in m.graph.node:
            print("   ", n.op_type, n.name, list(n.input), "->", list(n.output),
                  {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute
                   if a.type != onnx.AttributeProto.TENSOR})
except ImportError:
    pass
print(f"torch {torch.__version__}")

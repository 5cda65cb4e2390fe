"""Loads lamina checkpoints into the equivalent torch.nn modules with load_state_dict(strict=True).

For every NAME of seed_mlp, bn_mlp, readme_cnn, digits_cnn in FOLDER (written by `cargo run -p
lamina-train --example write_checkpoints -- FOLDER`): builds the torch.nn.Sequential that the
checkpoint's model spec describes (module names = lamina layer names, so state_dict keys are the
lamina paths), keeps the checkpoint's state_dict subset with the documented one-liner

    sd = {k: v for k, v in load_file(path).items()
          if k != "rng" and not k.startswith(("optim.", "accum."))}

loads it with strict=True, runs eval() on NAME.io.safetensors' `x` and asserts that torch's
output equals lamina's `y`: |torch - lamina| <= atol + rtol * |lamina| (1e-5 both by default).

It then writes OUT/state_dict.safetensors, the fixture of crates/lamina-train/tests (so CI checks
the same without torch): the metadata holds torch's own state_dict (names, shapes, dtypes) of
every model; for bn_mlp and digits_cnn (the small ones) it also holds torch-initialised weights
(seeded, BatchNorm statistics moved by three training-mode forward passes) as `NAME/<key>`, an
input `NAME/x` and torch's eval output `NAME/y`.

usage: python3 tools/golden/state_dict_check.py FOLDER OUT [--atol 1e-5] [--rtol 1e-5]
"""

import argparse
import json
import pathlib
import sys
from collections import OrderedDict

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MODELS = ["seed_mlp", "bn_mlp", "readme_cnn", "digits_cnn"]
FIXTURE_WEIGHTS = ["bn_mlp", "digits_cnn"]


def state_dict_subset(path):
    """The documented filter: lamina-only keys are `rng`, `optim.*` and `accum.*`."""
    return {
        k: v
        for k, v in load_file(str(path)).items()
        if k != "rng" and not k.startswith(("optim.", "accum."))
    }


def build(spec):
    """torch.nn.Sequential of a lamina model spec (the layer types these models use)."""
    shape = list(spec["input_shape"])
    shape[0] = 2
    probe = torch.zeros(shape)
    mods = OrderedDict()
    for layer in spec["layers"]:
        t, c, name = layer["type"], layer.get("config", {}), layer["name"]
        if t == "Dense":
            m = torch.nn.Linear(probe.shape[-1], c["units"], bias=c.get("use_bias", True))
        elif t == "Conv2D":
            m = torch.nn.Conv2d(
                probe.shape[1],
                c["out_channels"],
                c["kernel"],
                stride=c.get("stride", 1),
                padding=c.get("padding", 0),
                dilation=c.get("dilation", 1),
                groups=c.get("groups", 1),
                bias=c.get("use_bias", True),
            )
        elif t == "BatchNorm":
            cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}
            m = cls[probe.dim()](
                probe.shape[1], eps=c["eps"], momentum=c["momentum"], affine=c.get("affine", True)
            )
        elif t == "ReLU":
            m = torch.nn.ReLU()
        elif t == "Swish":
            m = torch.nn.SiLU()
        elif t == "LeakyReLU":
            m = torch.nn.LeakyReLU(c["slope"])
        elif t == "ELU":
            m = torch.nn.ELU(c.get("alpha", 1.0))
        elif t == "Dropout":
            m = torch.nn.Dropout(c["rate"])
        elif t == "Flatten":
            m = torch.nn.Flatten()
        elif t == "Reshape":
            m = torch.nn.Unflatten(1, tuple(c["shape"]))
        elif t == "Softmax":
            m = torch.nn.Softmax(dim=c.get("axis", -1))
        else:
            raise ValueError(f"layer type {t} has no torch translation in this script")
        mods[name] = m
        with torch.no_grad():
            probe = m.eval()(probe)
    return torch.nn.Sequential(mods)


def spec_of(path):
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["spec"])


def close(got, want, atol, rtol):
    diff = (got.double() - want.double()).abs()
    bad = diff > atol + rtol * want.double().abs()
    return float(diff.max()), int(bad.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=pathlib.Path)
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-5)
    a = p.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"torch {torch.__version__}, atol {a.atol}, rtol {a.rtol}, on the CPU")
    ok = True
    meta = {"torch_version": torch.__version__}
    fixture = {}
    for name in MODELS:
        ckpt = a.folder / f"{name}.safetensors"
        spec = spec_of(ckpt)
        model = build(spec)
        sd = state_dict_subset(ckpt)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            print(f"FAIL {name}: load_state_dict(strict=True): {e}")
            ok = False
            continue
        io = load_file(str(a.folder / f"{name}.io.safetensors"))
        model.eval()
        with torch.no_grad():
            got = model(io["x"])
        if got.shape != io["y"].shape:
            print(f"FAIL {name}: output shape {list(got.shape)}, lamina {list(io['y'].shape)}")
            ok = False
            continue
        diff, bad = close(got, io["y"], a.atol, a.rtol)
        ok &= bad == 0
        tracked = {k: int(v) for k, v in sd.items() if k.endswith("num_batches_tracked")}
        print(
            f"{'FAIL' if bad else 'ok  '} {name:<10} {len(sd)} tensors loaded strict, "
            f"num_batches_tracked {tracked or '-'}, output {list(got.shape)}, "
            f"max abs diff {diff:.3e} ({bad} elements out of tolerance)"
        )
        # the fixture: torch's own state_dict of a freshly built module
        torch.manual_seed(0)
        fresh = build(spec)
        meta[f"{name}.state_dict"] = json.dumps(
            [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in fresh.state_dict().items()]
        )
        if name in FIXTURE_WEIGHTS:
            x = io["x"]
            fresh.train()
            with torch.no_grad():
                for k in range(3):  # moves BatchNorm statistics; num_batches_tracked becomes 3
                    fresh(torch.randn_like(x) + k)
            fresh.eval()
            with torch.no_grad():
                y = fresh(x)
            for k, v in fresh.state_dict().items():
                fixture[f"{name}/{k}"] = v.contiguous()
            fixture[f"{name}/x"] = x.contiguous()
            fixture[f"{name}/y"] = y.contiguous()
    a.out.mkdir(parents=True, exist_ok=True)
    save_file(fixture, str(a.out / "state_dict.safetensors"), metadata=meta)
    print(f"wrote {a.out / 'state_dict.safetensors'} ({len(fixture)} tensors)")
    print("all models load strict and match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Cross-checks lamina's ONNX export against onnxruntime.

For every NAME.onnx in FOLDER (written by `cargo run -p lamina-onnx --example onnx_fixtures --
FOLDER`), runs the model on NAME.input.f32 with onnxruntime and compares with lamina's output
NAME.expected.f32 (raw little-endian f32; shapes in NAME.json). Passes when every element has
|ort - lamina| <= atol + rtol * |lamina|.

usage: python3 tools/golden/onnx_check.py FOLDER [--atol 1e-5] [--rtol 1e-5]
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort


def check(folder: pathlib.Path, atol: float, rtol: float) -> bool:
    models = sorted(folder.glob("*.onnx"))
    if not models:
        print(f"no *.onnx in {folder}")
        return False
    try:
        import onnx

        checker = onnx.checker.check_model
    except ImportError:  # the checker is a bonus; onnxruntime is the judge
        checker = None
    ok = True
    print(f"onnxruntime {ort.__version__}, atol {atol}, rtol {rtol}")
    for path in models:
        name = path.stem
        meta = json.loads((folder / f"{name}.json").read_text())
        x = np.fromfile(folder / f"{name}.input.f32", dtype="<f4").reshape(meta["input_shape"])
        want = np.fromfile(folder / f"{name}.expected.f32", dtype="<f4").reshape(
            meta["output_shape"]
        )
        try:
            if checker is not None:
                checker(str(path), full_check=True)
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (got,) = sess.run([meta["output"]], {meta["input"]: x})
        except Exception as e:  # report every model, not just the first failure
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            ok = False
            continue
        if got.shape != want.shape:
            print(f"FAIL {name}: shape {got.shape}, expected {want.shape}")
            ok = False
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        rel = diff / np.maximum(np.abs(want.astype(np.float64)), 1e-12)
        bad = diff > atol + rtol * np.abs(want)
        status = "FAIL" if bad.any() else "ok  "
        ok &= not bad.any()
        print(
            f"{status} {name:<10} shape {list(got.shape)}  max abs diff {diff.max():.3e}"
            f"  max rel diff {rel.max():.3e}  ({int(bad.sum())} elements out of tolerance)"
        )
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=pathlib.Path)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-5)
    a = p.parse_args()
    ok = check(a.folder, a.atol, a.rtol)
    print("all models match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

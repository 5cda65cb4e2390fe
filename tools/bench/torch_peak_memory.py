#!/usr/bin/env python3
"""Peak device memory of one PyTorch training step per benchmark model (DESIGN §5), for issue 7's
"peak device memory ≤ PyTorch's max_memory_allocated" point.

Run on the GPU machine next to `lamina bench --device cuda --json` (its `device_bytes` field):
    python3 tools/bench/torch_peak_memory.py
Builds each model exactly as ../shared/bench/torch_anchor.py does (Adam foreach, TF32 on), runs
eager steps (and the CUDA-graph mode torch_anchor.py times) and prints one JSON row per model and mode
with torch.cuda.max_memory_allocated() in bytes, each model and mode in its own process.
"""
import importlib.util, json, os, sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ANCHOR = os.path.join(ROOT, ".bench", "torch_anchor.py")
if not os.path.exists(ANCHOR):
    ANCHOR = os.path.join(ROOT, "..", "shared", "bench", "torch_anchor.py")

# torch_anchor.py runs its benchmark at import time; take only the model builders from its source
src = open(ANCHOR).read().split("MODELS = {")[0]
ns = {}
exec(compile(src.replace("args = p.parse_args()", "args = p.parse_args([])"), ANCHOR, "exec"), ns)
MODELS = {n: ns[n] for n in ["seed_mlp", "bn_mlp", "readme_cnn", "wide_mlp"]}
dev = torch.device("cuda")
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True


def peak(make, mode):
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model, xshape, classes = make()
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=(mode == "cudagraph"), foreach=True)
    x = torch.randn(*xshape, device=dev)
    y = torch.randint(0, classes, (xshape[0],), device=dev)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    if mode == "cudagraph":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
        for _ in range(5):
            g.replay()
    else:
        for _ in range(5):
            step()
    torch.cuda.synchronize()
    out = torch.cuda.max_memory_allocated()
    del model, opt, x, y
    return out


if len(sys.argv) == 3:  # one model and mode, in a fresh process so nothing of another model counts
    name, mode = sys.argv[1:]
    print(json.dumps({"model": name, "mode": mode,
                      "torch_max_memory_allocated": peak(MODELS[name], mode)}), flush=True)
else:
    import subprocess
    for name in MODELS:
        for mode in ["eager", "cudagraph"]:
            subprocess.run([sys.executable, __file__, name, mode], check=True)
    print(torch.__version__, torch.cuda.get_device_name(0))

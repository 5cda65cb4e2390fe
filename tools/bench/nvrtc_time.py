#!/usr/bin/env python3
"""Time one NVRTC compile of a CUDA C file (for the cold-start rows of crates/lamina-cuda/PERF.md).

Get the modules a model compiles with `LAMINA_CUDA_DUMP=<dir> lamina bench --model M --device cuda`,
then `python3 tools/bench/nvrtc_time.py <dir>/<hash>.cu [NVRTC options...]` (default options:
lamina's, `--gpu-architecture=sm_90 --std=c++17`; add `--fdevice-time-trace=<file>` for NVRTC's
own phase times). Each run is a fresh process, so NVRTC's library start-up is in the time.
"""
import ctypes
import glob
import os
import sys
import time

# the library lamina loads (by name), else a CUDA toolkit's or a Python wheel's
CANDIDATES = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"] + sorted(
    glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*")
    + glob.glob("/opt/**/libnvrtc.so*", recursive=True)
)


def load():
    for c in CANDIDATES:
        try:
            lib = ctypes.CDLL(c)
            print("nvrtc:", c, file=sys.stderr)
            return lib
        except OSError:
            pass
    sys.exit("no NVRTC library found")


def main():
    lib = load()
    src = open(sys.argv[1], "rb").read()
    opts = [o.encode() for o in (sys.argv[2:] or ["--gpu-architecture=sm_90", "--std=c++17"])]
    prog = ctypes.c_void_p()
    t = time.perf_counter()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, b"m.cu", 0, None, None) == 0
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    dt = time.perf_counter() - t
    n = ctypes.c_size_t()
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
    if rc != 0:
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
        log = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetProgramLog(prog, log)
        print(log.value.decode()[:2000])
    print(f"{os.path.basename(sys.argv[1])} {len(src) // 1000} kB rc {rc} {dt * 1e3:.0f} ms "
          f"cubin {n.value} bytes, options: {' '.join(sys.argv[2:]) or '(lamina defaults)'}")


if __name__ == "__main__":
    main()

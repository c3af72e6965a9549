#!/usr/bin/env python3
"""fp16 decode-attention baseline for bench/gpu_bench.cu: times torch's
scaled_dot_product_attention (one query token, GQA via enable_gqa) on the GPU for the
benchmark's shapes (B*H_kv with H_kv = 8, T, head_dim, group) and writes
"bh,T,D,g,ms" lines (median of 20 CUDA-event timings after warm-up)."""
import argparse
import sys

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-gb", type=float, default=9.0)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    dev = torch.device("cuda")
    shapes = []
    for D in (128, 64):
        for g in (1, 4):
            for bh in (32, 256, 1024):
                for T in (1024, 4096, 16384, 32768, 65536):
                    if 4.0 * bh * T * D / 1e9 <= a.max_gb:
                        shapes.append((bh, T, D, g))
    lines = []
    for bh, T, D, g in shapes:
        H = 8
        B = bh // H
        q = torch.randn(B, H * g, 1, D, device=dev, dtype=torch.float16)
        k = torch.randn(B, H, T, D, device=dev, dtype=torch.float16)
        v = torch.randn(B, H, T, D, device=dev, dtype=torch.float16)
        fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=(g > 1))
        for _ in range(3):
            fn()
        ts = []
        for _ in range(a.reps):
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1))
        ts.sort()
        ms = ts[len(ts) // 2]
        lines.append(f"{bh},{T},{D},{g},{ms:.5f}")
        print(lines[-1], flush=True)
        del q, k, v
        torch.cuda.empty_cache()
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("torch", torch.__version__, file=sys.stderr)


if __name__ == "__main__":
    main()

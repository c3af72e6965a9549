#!/usr/bin/env python3
"""fp16 attention baseline for bench/gpu_bench.cu: times torch's
scaled_dot_product_attention on the GPU for the shapes the benchmark lists
(`packkv_bench_gpu --list-shapes [its shape options]`: lines "H,B,T,D,g,q_len") and
writes "H,B,T,D,g,q_len,ms" lines (median of --reps CUDA-event timings after 3 warm-up
calls; "nan" when the shape did not run: out of memory, or past --time-budget).

Per shape: K and V fp16 [B][H][T][D], queries fp16 [B][H*g][q_len][D], no mask (each of
the q_len queries attends to every cached token, as the benchmark's packkv decode does),
enable_gqa when g > 1. With --packed-gqa it also times the same attention with the g * q_len
queries of each KV head as one query sequence (q viewed as [B][H][g*q_len][D], plain
multi-head SDPA, no enable_gqa: the usual way to run GQA decode on a dense kernel) and
reports the faster of the two forms (both on stderr). Without --shapes it times the issue-4
sweep (H 8, q_len 1)."""
import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F


def sweep_shapes(max_gb):
    out = []
    for D in (128, 64):
        for g in (1, 4):
            for bh in (32, 256, 1024):
                for T in (1024, 4096, 16384, 32768, 65536):
                    if 4.0 * bh * T * D / 1e9 <= max_gb:
                        out.append((8, bh // 8, T, D, g, 1))
    return out


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    ts.sort()
    return ts[len(ts) // 2]


def time_shape(H, B, T, D, g, ql, reps, dev, packed):
    """Median ms of the shape: the enable_gqa form, or with packed the faster of it and
    the packed form (query head h*g+i, position p of KV head h -> row i*q_len+p of h)."""
    q = torch.randn(B, H * g, ql, D, device=dev, dtype=torch.float16)
    k = torch.randn(B, H, T, D, device=dev, dtype=torch.float16)
    v = torch.randn(B, H, T, D, device=dev, dtype=torch.float16)
    try:
        ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=(g > 1)), reps)
        if packed and g * ql > 1:
            qp = q.view(B, H, g * ql, D)
            ms_p = median_ms(lambda: F.scaled_dot_product_attention(qp, k, v), reps)
            print(f"H {H} B {B} T {T} D {D} g {g} q_len {ql}: enable_gqa {ms:.5f} ms, packed {ms_p:.5f} ms",
                  file=sys.stderr)
            ms = min(ms, ms_p)
        return ms
    finally:
        del q, k, v
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--shapes", help="file of H,B,T,D,g,q_len lines (packkv_bench_gpu --list-shapes)")
    ap.add_argument("--max-gb", type=float, default=9.0, help="without --shapes: fp16 K+V limit of the sweep")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--time-budget", type=float, default=0.0, help="seconds; start no shape after it (0: none)")
    ap.add_argument("--packed-gqa", action="store_true", help="also time the packed-GQA form, keep the faster")
    a = ap.parse_args()
    dev = torch.device("cuda")
    if a.shapes:
        shapes = []
        for ln in open(a.shapes):
            f = ln.strip().split(",")
            if len(f) == 6 and all(x.isdigit() for x in f):
                shapes.append(tuple(int(x) for x in f))
    else:
        shapes = sweep_shapes(a.max_gb)
    t0 = time.monotonic()
    lines = []
    for H, B, T, D, g, ql in shapes:
        ms = math.nan
        if a.time_budget <= 0 or time.monotonic() - t0 <= a.time_budget:
            try:
                ms = time_shape(H, B, T, D, g, ql, a.reps, dev, a.packed_gqa)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"out of memory: H {H} B {B} T {T} D {D} g {g} q_len {ql}", file=sys.stderr)
        lines.append(f"{H},{B},{T},{D},{g},{ql},{ms:.5f}")
        print(lines[-1], flush=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("torch", torch.__version__, torch.cuda.get_device_name(0), f"{time.monotonic() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

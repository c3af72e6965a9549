"""Multi-GPU scaling of packkv's fused attention (issue 8, item 3; the paper's Fig. 17).

For N in --gpus (e.g. 1,2,4,8), N processes run at once, one per GPU, each on its own
caches (independent workloads, no communication, as an engine with head-sharded layers
runs them): B sequences x H_kv KV heads x T tokens of real SmolLM2 KV from data/ (tiled
to size) or synthetic data, then R timed repetitions of packkv scores (K.q), apply (p.V)
and decode attention. Each process reports its fp16-equivalent throughput (fp16 bytes of
K or V read per second) from CUDA events; the table gives per-GPU throughput for every N
and the scaling efficiency against N = 1.

    python3 bench/multi_gpu_scaling.py --gpus 1,2,4,8             # GPU machine (torch + packkv)
    python3 bench/multi_gpu_scaling.py --gpus 1,2 --cpu --tokens 2048 --seqs 2   # code path, CPU

Needs the packkv Python package built with CUDA (see bench/gpu_bindings_run.sh) and torch.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_kv(tokens: int, heads: int, dim: int, real: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """K, V [tokens, heads, dim] float16: the real sample's layer 15 tiled, or Gaussian."""
    if real:
        from safetensors.numpy import load_file
        t = load_file(os.path.join(REPO, "data", "smollm2_kv_sample.safetensors"))
        out = []
        for name in ("layer.15.k", "layer.15.v"):
            src = t[name].reshape(t[name].shape[0], -1)          # [T, 192]
            rows = src[np.arange(tokens) % src.shape[0]]          # cycle tokens
            row = np.resize(rows, (tokens, heads * dim))          # repeat values over heads x dim
            out.append(np.ascontiguousarray(row.reshape(tokens, heads, dim).astype(np.float16)))
        return out[0], out[1]
    offs = 2.0 * rng.standard_normal((heads, dim))
    k = (offs + rng.standard_normal((tokens, heads, dim))).astype(np.float16)
    v = (0.5 * offs + rng.standard_normal((tokens, heads, dim))).astype(np.float16)
    return k, v


def worker(rank: int, args, queue) -> None:
    import packkv
    device = -1 if args.cpu else rank
    torch = None
    if not args.cpu:
        import torch  # noqa: F811
        torch.cuda.set_device(device)
    rng = np.random.default_rng(rank)
    k, v = make_kv(args.tokens, args.kv_heads, args.head_dim, args.real, rng)
    hq = args.kv_heads * args.group

    def dev(a):
        return torch.from_numpy(a).cuda(device) if torch is not None else a

    cache = packkv.Cache(args.kv_heads, args.head_dim, device=device, max_seqs=args.seqs,
                         max_tokens_per_seq=args.tokens)
    kd, vd = dev(k), dev(v)
    for s in range(args.seqs):
        cache.append(kd, vd, seq_ids=s)
    ids = list(range(args.seqs))
    q = dev(rng.standard_normal((args.seqs, hq, args.head_dim)).astype(np.float16))
    probs = dev(np.full((args.seqs, hq, args.tokens), 1.0 / args.tokens, np.float32))
    ops = {"scores": lambda: cache.scores(q, ids), "apply": lambda: cache.apply(probs, ids),
           "decode": lambda: cache.decode(q, ids)}
    fp16_bytes = args.seqs * args.tokens * args.kv_heads * args.head_dim * 2  # K (or V) in fp16
    result = {"rank": rank}
    for name, fn in ops.items():
        for _ in range(3):
            fn()
        times = []
        for _ in range(args.reps):
            if torch is not None:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        read = fp16_bytes * (2 if name == "decode" else 1)
        result[name] = {"median_s": med, "fp16_equiv_GBps": read / med / 1e9}
    st = cache.stats()
    result["ratio"] = st.ratio
    cache.close()
    queue.put(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", default="1", help="comma-separated process counts, e.g. 1,2,4,8")
    ap.add_argument("--cpu", action="store_true", help="CPU caches (checks the code path only)")
    ap.add_argument("--seqs", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--group", type=int, default=1, help="GQA group (query heads per KV head)")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--synthetic", dest="real", action="store_false", help="Gaussian data instead of data/")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    counts = [int(x) for x in args.gpus.split(",")]
    if not args.cpu:
        import torch
        have = torch.cuda.device_count()
        if max(counts) > have:
            raise SystemExit(f"asked for {max(counts)} GPUs, {have} visible")
    ctx = mp.get_context("spawn")
    rows, base = [], None
    for n in counts:
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(r, args, queue)) for r in range(n)]
        for p in procs:
            p.start()
        res = [queue.get() for _ in procs]
        for p in procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"rank failed with exit code {p.exitcode}")
        per_gpu = {op: statistics.mean(r[op]["fp16_equiv_GBps"] for r in res) for op in ("scores", "apply", "decode")}
        if base is None:
            base = per_gpu
        rows.append({"n": n, "per_gpu_GBps": per_gpu,
                     "efficiency": {op: per_gpu[op] / base[op] for op in per_gpu}, "ratio": res[0]["ratio"]})
    kind = "CPU processes" if args.cpu else "GPUs"
    print(f"{args.seqs} seqs x {args.kv_heads} KV heads x {args.tokens} tokens, head_dim {args.head_dim}, "
          f"GQA {args.group}, {'real' if args.real else 'synthetic'} KV, all-in ratio {rows[0]['ratio']:.2f}")
    print(f"{kind:>14} | per-device fp16-equivalent GB/s (scaling efficiency vs 1)")
    print(f"{'':>14} | {'K.q':>18} {'p.V':>18} {'decode':>18}")
    for r in rows:
        cells = " ".join(f"{r['per_gpu_GBps'][op]:10.1f} ({r['efficiency'][op]:5.1%})" for op in ("scores", "apply", "decode"))
        print(f"{r['n']:>14} | {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""Head-sharded (tensor-parallel) decode attention over packkv caches on several GPUs.

An engine that outgrows one GPU splits the attention heads of every layer across GPUs and
keeps one cache per layer per GPU. This example does that for real SmolLM2-135M layers
(data/smollm2_kv_sample.safetensors: 3 KV heads x 64, 9 query heads, GQA group 3):

* rank r of N owns the KV heads h with h % N == r (and their query heads), holds them in a
  packkv cache on its own device, and replays the layer as an engine would: a prefill, then
  single-token decode steps (append the token's K/V, then decode attention for its query);
* the per-rank outputs are gathered with torch.distributed (NCCL when every rank has its own
  GPU, gloo otherwise) and compared on rank 0 with one cache that holds all heads (the
  single-GPU result).

Scales are per token and head (scale_granularity="per_token_head"), so a head is quantized
the same way whichever rank holds it; repacking permutations may differ between shardings,
and attention does not depend on them, so outputs agree to fp32 rounding (checked: relative
L2 <= 1e-5).

Run:
    python3 examples/multi_gpu/shard_heads.py --world 2          # 2 processes, NCCL if >= 2 GPUs
    python3 examples/multi_gpu/shard_heads.py --world 3 --cpu    # CPU caches + gloo (no GPU)
With fewer GPUs than ranks, ranks share devices (rank % n_gpus) and gloo does the gather, so
the sharding code path can be checked on one GPU. Leave NVLink multicast off
(NCCL_NVLS_ENABLE=0, as set on the lent machines).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(REPO, "data", "smollm2_kv_sample.safetensors")


def load_layer(path: str, layer: int):
    """K, V [T, 3, 64] float16 and the queries [Tq, 9, 64] of the last Tq positions."""
    from safetensors.numpy import load_file
    t = load_file(path)
    return t[f"layer.{layer}.k"], t[f"layer.{layer}.v"], t[f"layer.{layer}.q"]


def replay(cache, k, v, q, kv_heads, group, to_dev, steps):
    """Prefill, then `steps` decode steps on the given KV heads; returns [steps, len(kv_heads)*group, D]."""
    T, Tq = k.shape[0], q.shape[0]
    start = T - Tq
    kh, vh = k[:, kv_heads], v[:, kv_heads]
    qh = q[:, [h * group + j for h in kv_heads for j in range(group)]]
    cache.append(to_dev(np.ascontiguousarray(kh[:start])), to_dev(np.ascontiguousarray(vh[:start])))
    outs = []
    for i in range(steps):
        pos = start + i
        cache.append(to_dev(np.ascontiguousarray(kh[pos:pos + 1])), to_dev(np.ascontiguousarray(vh[pos:pos + 1])))
        out = cache.decode(to_dev(np.ascontiguousarray(qh[i].astype(np.float32))))
        outs.append(out.cpu().numpy() if hasattr(out, "cpu") else np.asarray(out))
    return np.stack(outs)


def worker(rank: int, args) -> None:
    import torch
    import torch.distributed as dist
    import packkv

    n_gpus = 0 if args.cpu else torch.cuda.device_count()
    if not args.cpu and n_gpus == 0:
        raise SystemExit("no CUDA device: use --cpu")
    device = -1 if args.cpu else rank % n_gpus
    backend = "nccl" if (not args.cpu and n_gpus >= args.world) else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(args.port))
    if device >= 0:
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=args.world)

    def to_dev(a):
        return torch.from_numpy(a).cuda(device) if device >= 0 else a

    k, v, q = load_layer(args.data, args.layer)
    n_kv, n_q, d = k.shape[1], q.shape[1], k.shape[2]
    group = n_q // n_kv
    mine = [h for h in range(n_kv) if h % args.world == rank]
    steps = min(args.steps, q.shape[0])
    common = dict(max_seqs=1, max_tokens_per_seq=k.shape[0], scale_granularity="per_token_head",
                  rel_scale_k=args.rk, rel_scale_v=args.rv)
    local = np.zeros((steps, 0, d), np.float32)
    if mine:
        with packkv.Cache(len(mine), d, device=device, **common) as cache:
            local = replay(cache, k, v, q, mine, group, to_dev, steps)
    # gather every rank's [steps, heads_r*group, d] (ranks may own different head counts)
    counts = [len([h for h in range(n_kv) if h % args.world == r]) * group for r in range(args.world)]
    width = max(counts)
    padded = np.zeros((steps, width, d), np.float32)
    padded[:, :local.shape[1]] = local
    t = torch.from_numpy(padded)
    if backend == "nccl":
        t = t.cuda(device)
    gathered = [torch.zeros_like(t) for _ in range(args.world)]
    dist.all_gather(gathered, t)
    if rank == 0:
        full = np.zeros((steps, n_q, d), np.float32)
        for r in range(args.world):
            heads_r = [h for h in range(n_kv) if h % args.world == r]
            part = gathered[r].cpu().numpy()
            for i, h in enumerate(heads_r):
                full[:, h * group:(h + 1) * group] = part[:, i * group:(i + 1) * group]
        with packkv.Cache(n_kv, d, device=0 if device >= 0 else -1, **common) as single:
            ref = replay(single, k, v, q, list(range(n_kv)), group,
                         (lambda a: torch.from_numpy(a).cuda(0)) if device >= 0 else (lambda a: a), steps)
        err = float(np.sqrt(((full - ref) ** 2).sum() / (ref ** 2).sum()))
        print(f"world {args.world} ({backend}, {'cpu' if device < 0 else f'{n_gpus} gpu(s)'}), layer {args.layer}, "
              f"{steps} decode steps: sharded vs single-cache output rel L2 = {err:.3e}")
        ok = err <= 1e-5
        print("OK" if ok else "MISMATCH")
        dist.destroy_process_group()
        if not ok:
            sys.exit(1)
    else:
        dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", type=int, default=None, help="ranks (default: number of GPUs, or 3 with --cpu)")
    ap.add_argument("--cpu", action="store_true", help="CPU caches and gloo (no GPU needed)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rk", type=float, default=0.1)
    ap.add_argument("--rv", type=float, default=0.2)
    ap.add_argument("--port", type=int, default=29571)
    args = ap.parse_args()
    import torch
    import torch.multiprocessing as mp
    if args.world is None:
        args.world = 3 if args.cpu else max(1, torch.cuda.device_count())
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    mp.spawn(worker, args=(args,), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()

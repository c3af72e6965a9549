#!/usr/bin/env python3
"""Dump real SmolLM2-135M Q/K/V tensors for a long English text to safetensors.

What
    Tokenizes a text (default: data/kjv_genesis.txt, KJV Genesis, public
    domain), runs the first ``--tokens`` tokens through the numpy model of
    ``smollm2.py`` in causal chunks with a KV cache, and writes:

    * ``layer.{L}.k``, ``layer.{L}.v``: float16 [T, n_kv_heads, head_dim], token
      order; K is post-RoPE (HF rotate-half channel order, see smollm2.py).
    * ``layer.{L}.q``: float16 [Tq, n_q_heads, head_dim], the post-RoPE queries
      of the last Tq positions (T-Tq .. T-1): real decode-style queries over the
      preceding cache.
    * ``tokens``: int32 [T].
    * string metadata: model, source text, layers, head counts, rope_theta,
      q_positions_start, perplexity and the command that regenerates the file.

Why
    libpackkv's ratios and errors must come from real KV caches (DESIGN.md,
    "Real data").  The script also checks itself: it prints the model's
    perplexity on the text, then reloads the written file and recomputes each
    dumped layer's attention softmax(q k^T / sqrt(d)) v (causal, GQA) from the
    fp16 tensors with an independent per-head reference (naive_attention),
    comparing with the attention output the forward pass computed.

Usage (setup: see smollm2.py)::

    # full dump, all 30 layers, outside the repo (~1-2 minutes on 2 cores)
    python3 scripts/kv_dump/dump_kv.py --out build/smollm2_kv_full.safetensors
    # the committed sample
    python3 scripts/kv_dump/dump_kv.py --tokens 2048 --tq 256 --layers 0,15,29 \\
        --out data/smollm2_kv_sample.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2 import MODEL_NAME, SmolLM2, log_softmax_nll  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_TEXT = os.path.join(REPO, "data", "kjv_genesis.txt")
DEFAULT_TEXT_DESC = ("King James Version (1611), Book of Genesis; public domain; extracted "
                     "from Debian package bible-kjv-text 4.38 by scripts/kv_dump/make_text.py")


def naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos0: int) -> np.ndarray:
    """Independent, loop-per-head reference: softmax(q_h k_g^T / sqrt(d)) v_g, causal.

    Query head h reads KV head h // (n_q_heads / n_kv_heads) (GQA).  Kept
    deliberately simple (float64) to cross-check the model's vectorized code.
    """
    n, hq, d = q.shape
    t, hkv, _ = k.shape
    group = hq // hkv
    out = np.zeros((n, hq, d))
    allowed = np.arange(t)[None, :] <= (q_pos0 + np.arange(n))[:, None]
    for h in range(hq):
        g = h // group
        s = q[:, h].astype(np.float64) @ k[:, g].astype(np.float64).T / np.sqrt(d)
        s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h] = p @ v[:, g].astype(np.float64)
    return out


def parse_layers(spec: str, n_layers: int) -> list[int]:
    if spec == "all":
        return list(range(n_layers))
    layers = sorted({int(s) for s in spec.split(",") if s.strip()})
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise SystemExit(f"--layers must be in [0, {n_layers})")
    return layers


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", default=DEFAULT_TEXT, help="UTF-8 text file to run")
    ap.add_argument("--text-desc", default=None, help="provenance string for metadata")
    ap.add_argument("--out", default="build/smollm2_kv_full.safetensors")
    ap.add_argument("--tokens", type=int, default=4096, help="T, number of tokens")
    ap.add_argument("--tq", type=int, default=512, help="queries kept: last Tq positions")
    ap.add_argument("--layers", default="all", help="'all' or comma list, e.g. 0,15,29")
    ap.add_argument("--chunk", type=int, default=256, help="tokens per forward chunk")
    ap.add_argument("--gguf", default=None)
    args = ap.parse_args(argv)
    cmd = "python3 scripts/kv_dump/dump_kv.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)

    t_start = time.time()
    model = SmolLM2(args.gguf, rope_layout="hf")
    cfg = model.cfg
    layers = parse_layers(args.layers, cfg.n_layers)
    T, Tq = args.tokens, args.tq
    if not 0 < Tq <= T:
        raise SystemExit("need 0 < tq <= tokens")

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    all_ids = model.tokenizer.encode(text).ids
    if len(all_ids) < T:
        raise SystemExit(f"text has only {len(all_ids)} tokens < {T}")
    ids = np.asarray(all_ids[:T], dtype=np.int64)
    q0 = T - Tq
    print(f"text {args.text}: {len(all_ids)} tokens, using {T}; layers {layers}; "
          f"q positions {q0}..{T - 1}", file=sys.stderr)

    wanted = set(layers)
    q_buf = {L: np.zeros((Tq, cfg.n_heads, cfg.head_dim), np.float32) for L in layers}
    a_buf = {L: np.zeros((Tq, cfg.n_heads, cfg.head_dim), np.float32) for L in layers}

    def _keep(buf):
        def cb(layer, p0, x):
            if layer not in wanted:
                return
            lo = max(p0, q0)
            hi = p0 + x.shape[0]
            if lo < hi:
                buf[layer][lo - q0:hi - q0] = x[lo - p0:hi - p0]
        return cb

    cache = model.new_cache(T)
    nll_sum, nll_n = 0.0, 0
    for p0 in range(0, T, args.chunk):
        chunk = ids[p0:p0 + args.chunk]
        logits = model.forward(chunk, cache, capture_q=_keep(q_buf), capture_attn=_keep(a_buf))
        targets = ids[p0 + 1:p0 + 1 + len(chunk)]
        nll = log_softmax_nll(logits[:len(targets)], targets)
        nll_sum += float(nll.sum())
        nll_n += len(targets)
        print(f"  {p0 + len(chunk)}/{T} tokens, running ppl {np.exp(nll_sum / nll_n):.3f}, "
              f"{time.time() - t_start:.0f}s", file=sys.stderr)
    ppl = float(np.exp(nll_sum / nll_n))

    tensors = {"tokens": ids.astype(np.int32)}
    for L in layers:
        tensors[f"layer.{L}.q"] = q_buf[L].astype(np.float16)
        tensors[f"layer.{L}.k"] = cache.k[L].astype(np.float16)
        tensors[f"layer.{L}.v"] = cache.v[L].astype(np.float16)
    with open(args.text, "rb") as f:
        text_sha = hashlib.sha256(f.read()).hexdigest()
    rel_text = os.path.relpath(os.path.abspath(args.text), REPO)
    desc = args.text_desc or (DEFAULT_TEXT_DESC if os.path.abspath(args.text) == DEFAULT_TEXT
                              else "user-supplied text")
    meta = {
        "model": MODEL_NAME,
        "gguf_file": os.path.basename(model.w.path),
        "source_text": f"{rel_text}: {desc}",
        "source_text_sha256": text_sha,
        "n_tokens": str(T),
        "n_layers_in_file": str(len(layers)),
        "n_layers_model": str(cfg.n_layers),
        "layers": ",".join(map(str, layers)),
        "n_q_heads": str(cfg.n_heads),
        "n_kv_heads": str(cfg.n_kv_heads),
        "head_dim": str(cfg.head_dim),
        "rope_theta": repr(cfg.rope_theta),
        "rope_layout": "hf rotate-half (pairs i, i+head_dim/2); llama.cpp q/k permutation undone",
        "q_positions_start": str(q0),
        "n_q_positions": str(Tq),
        "dtype": "float16",
        "layout": "layer.{L}.k/v: [T, n_kv_heads, head_dim] post-RoPE K; "
                  "layer.{L}.q: [Tq, n_q_heads, head_dim] post-RoPE, positions q_positions_start..T-1",
        "perplexity": f"{ppl:.4f}",
        "command": cmd,
    }
    from safetensors.numpy import load_file, save_file

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB); "
          f"perplexity on {nll_n} predicted tokens: {ppl:.3f}", file=sys.stderr)

    # ---- verification from the file: recompute attention from fp16 q/k/v
    back = load_file(args.out)
    worst = 0.0
    for L in layers:
        q = back[f"layer.{L}.q"].astype(np.float32)
        k = back[f"layer.{L}.k"].astype(np.float32)
        v = back[f"layer.{L}.v"].astype(np.float32)
        assert q.shape == (Tq, cfg.n_heads, cfg.head_dim) and q.dtype == np.float32
        assert k.shape == v.shape == (T, cfg.n_kv_heads, cfg.head_dim)
        ref = a_buf[L]
        got16 = naive_attention(q, k, v, q0)
        got32 = naive_attention(q_buf[L], cache.k[L], cache.v[L], q0)
        scale = float(np.abs(ref).max())
        e16 = float(np.abs(got16 - ref).max())
        e32 = float(np.abs(got32 - ref).max())
        worst = max(worst, e16 / scale)
        print(f"  layer {L:2d}: attn check  max|out|={scale:.3f}  fp16-file err={e16:.2e} "
              f"(rel {e16 / scale:.1e})  fp32-internal err={e32:.2e}", file=sys.stderr)
        assert e32 <= 1e-4 * max(1.0, scale), "fp32 recompute disagrees with forward pass"
    assert worst < 2e-2, "fp16 dump disagrees with forward pass"
    assert np.array_equal(back["tokens"], ids.astype(np.int32))
    print(f"attention check OK (worst relative fp16 error {worst:.1e}); "
          f"total {time.time() - t_start:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()

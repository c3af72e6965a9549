#!/usr/bin/env python3
"""Generate text with SmolLM2-135M-Instruct whose KV cache is a libpackkv cache.

What it does
    Runs the numpy SmolLM2-135M-Instruct of scripts/kv_dump/smollm2.py (30 layers, 9 query
    heads, 3 KV heads, head_dim 64) twice on the same prompt, greedy decoding:

    1. uncompressed: the model's own float32 KV cache (counted as fp16, 2 bytes a value);
    2. packkv: one ``packkv.Cache`` per layer (CPU backend, kv_dtype fp16, the library's
       default parameters unless given: r_K 0.035, r_V 0.07, 4 sink tokens, a 64-token
       residual window). The prompt is a prefill: each layer computes its causal attention
       over the prompt in numpy (as an engine's prefill kernel would) and appends the
       prompt's post-RoPE K/V to its cache, which keeps the first tokens exact (sink tokens)
       and compresses every 64-token block that leaves the residual window. Every decode
       step then, per layer, appends the new token's K/V (``Cache.append``) and gets the
       attention output from the library (``Cache.decode``: softmax(q.K^T/8) V over the
       compressed blocks and the fp16 window, GQA 9 query heads over 3 KV heads).

    It prints both continuations and the KV memory of both caches side by side (all-in
    packkv bytes = compressed_bytes_used + residual_bytes, from ``Cache.stats()``).

    The default prompt is the first 1024 tokens of data/kjv_genesis.txt (KJV Genesis,
    public domain) continued as plain text, so that most of the cache is compressed;
    ``--prompt "..."`` uses the chat template instead (a short prompt stays in the
    sink tokens and the fp16 window unless ``--residual`` is smaller).

Setup and run (from the repository root)::

    bash scripts/setup.sh                                   # numpy, gguf, tokenizers, model
    pip install ./bindings/python -C cmake.define.PACKKV_ENABLE_CUDA=OFF
    python3 examples/python/smollm2_generate.py
    python3 examples/python/smollm2_generate.py --prompt "What is the capital of France?" --residual 16

Options: --rk/--rv (relative scales r_K, r_V), --repack none|median|greedy, --scales
per_token|per_token_head, --residual N, --sinks N (each: the library's default when not
given), --max-new-tokens N, --context-tokens N.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # small matrices; faster on shared cores

import argparse
import math
import sys
import textwrap
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts", "kv_dump"))
import smollm2  # noqa: E402  (the numpy model)

import packkv  # noqa: E402  (the Python binding: pip install ./bindings/python)


class PackKVSmolLM2:
    """SmolLM2 whose attention layers read and write one packkv cache each."""

    def __init__(self, model: smollm2.SmolLM2, max_tokens: int, **cache_kwargs):
        self.m = model
        c = model.cfg
        self.caches = [packkv.Cache(n_kv_heads=c.n_kv_heads, head_dim=c.head_dim, device=-1,
                                    kv_dtype="float16", max_tokens_per_seq=max_tokens,
                                    **cache_kwargs)
                       for _ in range(c.n_layers)]
        self.length = 0

    def close(self):
        for cache in self.caches:
            cache.close()

    def forward(self, tokens) -> np.ndarray:
        """Process `tokens` after the cached ones; returns the last position's logits.
        Several tokens: a prefill (numpy causal attention over the chunk, which must be the
        first one; then append). One token: a decode step (append, then library attention)."""
        m, cfg, w = self.m, self.m.cfg, self.m.w.t
        tokens = np.asarray(tokens, dtype=np.int64)
        n, p0 = len(tokens), self.length
        if n > 1 and p0 > 0:
            raise ValueError("this example prefills once, then decodes one token at a time")
        hq, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        cos, sin = smollm2.rope_tables(np.arange(p0, p0 + n), d, cfg.rope_theta)
        x = w["token_embd.weight"][tokens]
        for li, cache in enumerate(self.caches):
            pre = f"blk.{li}."
            h = smollm2.rms_norm(x, w[pre + "attn_norm.weight"], cfg.rms_eps)
            q = (h @ w[pre + "attn_q.weight"].T).reshape(n, hq, d)
            k = (h @ w[pre + "attn_k.weight"].T).reshape(n, hkv, d)
            v = (h @ w[pre + "attn_v.weight"].T).reshape(n, hkv, d)
            q = smollm2.apply_rope(q, cos, sin, m.rope_layout)
            k16 = smollm2.apply_rope(k, cos, sin, m.rope_layout).astype(np.float16)
            v16 = v.astype(np.float16)
            if n > 1:   # prefill: exact attention over the prompt (fp16 K/V), then store it
                attn = smollm2.causal_gqa_attention(q, k16.astype(np.float32),
                                                    v16.astype(np.float32), 0)
                cache.append(k16, v16)
            else:       # decode: append the token, attend over the compressed cache
                cache.append(k16, v16)
                attn = cache.decode(np.ascontiguousarray(q[0], dtype=np.float32),
                                    scale=1.0 / math.sqrt(d))[None]
            x = x + attn.reshape(n, hq * d) @ w[pre + "attn_output.weight"].T
            h = smollm2.rms_norm(x, w[pre + "ffn_norm.weight"], cfg.rms_eps)
            x = x + (smollm2.silu(h @ w[pre + "ffn_gate.weight"].T) *
                     (h @ w[pre + "ffn_up.weight"].T)) @ w[pre + "ffn_down.weight"].T
        self.length += n
        h = smollm2.rms_norm(x[-1:], w["output_norm.weight"], cfg.rms_eps)
        return (h @ m.w.lm_head.T)[0]

    def generate(self, prompt_ids, max_new_tokens: int, stop_ids=()) -> list[int]:
        """Greedy decoding; returns the new token ids."""
        logits = self.forward(prompt_ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits))
            if nxt in stop_ids:
                break
            out.append(nxt)
            logits = self.forward([nxt])
        return out

    def stats(self) -> dict:
        """packkv_cache_stats summed over the layers."""
        tot: dict = {}
        for cache in self.caches:
            for key, val in cache.stats().as_dict().items():
                tot[key] = tot.get(key, 0) + int(val)
        return tot


def mib(b: float) -> str:
    return f"{b / 2**20:.2f} MiB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", default=None,
                    help="a user message (chat template); default: KJV Genesis as plain text")
    ap.add_argument("--context-tokens", type=int, default=1024,
                    help="tokens of data/kjv_genesis.txt used as the default prompt")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--rk", type=float, default=None, help="relative scale r_K (default: the library's, 0.035)")
    ap.add_argument("--rv", type=float, default=None, help="relative scale r_V (default: the library's, 0.07)")
    ap.add_argument("--repack", choices=["none", "median", "greedy"], default=None,
                    help="block repacking (default: the library's, median)")
    ap.add_argument("--scales", choices=["per_token", "per_token_head"], default=None,
                    help="scale granularity (default: the library's, per_token)")
    ap.add_argument("--residual", type=int, default=None,
                    help="fp16 residual window in tokens (default: the library's, 64)")
    ap.add_argument("--sinks", type=int, default=None,
                    help="sink tokens kept exact (default: the library's, 4)")
    args = ap.parse_args()

    t0 = time.time()
    model = smollm2.SmolLM2()
    tok = model.tokenizer
    if args.prompt is None:
        with open(os.path.join(REPO, "data", "kjv_genesis.txt"), encoding="utf-8") as f:
            ids = tok.encode(f.read()).ids[:args.context_tokens]
        shown = "..." + tok.decode(ids[-60:])
    else:
        ids = tok.encode(model.chat_prompt(args.prompt)).ids
        shown = args.prompt
    stop = {model.cfg.eos_id, 0}
    print(f"libpackkv {packkv.version()}; model {smollm2.MODEL_NAME} (loaded in "
          f"{time.time() - t0:.1f}s); prompt {len(ids)} tokens, greedy, "
          f"max {args.max_new_tokens} new tokens")
    print(textwrap.fill("prompt: " + shown.replace("\n", " / "), 100))

    t1 = time.time()
    ref = model.generate(ids, args.max_new_tokens, stop_ids=stop)
    t_ref = time.time() - t1

    t1 = time.time()
    pk = PackKVSmolLM2(model, len(ids) + args.max_new_tokens + 1, rel_scale_k=args.rk,
                       rel_scale_v=args.rv, repack=args.repack,
                       scale_granularity=args.scales, residual_tokens=args.residual,
                       sink_tokens=args.sinks)
    new = pk.generate(ids, args.max_new_tokens, stop_ids=stop)
    t_pk = time.time() - t1
    st = pk.stats()
    p = pk.caches[0].params
    pk.close()

    same = next((i for i, (a, b) in enumerate(zip(ref, new)) if a != b), min(len(ref), len(new)))
    print()
    for name, toks, secs in (("uncompressed", ref, t_ref), ("packkv", new, t_pk)):
        print(f"--- continuation, {name} KV cache ({len(toks)} tokens, {secs:.1f}s):")
        print(textwrap.fill(tok.decode(toks).replace("\n", " / "), 100))
    print(f"(identical for the first {same} of {max(len(ref), len(new))} generated tokens)")

    n_tok = int(st["n_tokens"]) // len(pk.caches)
    all_in = st["compressed_bytes_used"] + st["residual_bytes"]
    fp16 = st["fp16_bytes"]
    elements = fp16 // 2
    rows = [
        ("tokens held per layer", f"{n_tok}", f"{n_tok}"),
        ("compressed / fp16 (sinks + window) tokens", f"0 / {n_tok}",
         f"{int(st['n_compressed_tokens']) // 30} / {int(st['n_residual_tokens']) // 30}"),
        ("K/V bytes, 30 layers (all-in)", mib(fp16), mib(all_in)),
        ("  compressed blocks", "-", mib(st["compressed_bytes_used"])),
        ("  fp16 sinks + residual window", mib(fp16), mib(st["residual_bytes"])),
        ("bytes per K/V element", "2.000", f"{all_in / elements:.3f}"),
        ("ratio vs fp16", "1.00x", f"{fp16 / all_in:.2f}x"),
    ]
    scales = {v: k for k, v in packkv.SCALE_GRANULARITY.items()}[p.scale_granularity]
    repack = {v: k for k, v in packkv.REPACK.items()}[p.repack]
    print(f"\nKV memory (r_K {p.rel_scale_k:.3g} -> {p.bits_k} bits, r_V {p.rel_scale_v:.3g} -> "
          f"{p.bits_v} bits, {scales}, repack {repack}, {p.sink_tokens} sink tokens, "
          f"window {p.residual_tokens}):")
    w0 = max(len(r[0]) for r in rows)
    print(f"{'':{w0}}  {'uncompressed (fp16)':>20}  {'packkv':>12}")
    for a, b, c in rows:
        print(f"{a:{w0}}  {b:>20}  {c:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

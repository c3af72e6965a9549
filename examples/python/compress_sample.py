#!/usr/bin/env python3
"""Compresses one layer of the real SmolLM2-135M KV sample with packkv and prints the ratio.

Usage: compress_sample.py [data/smollm2_kv_sample.safetensors] [--layer 15]

Reads layer.{L}.k / layer.{L}.v (float16 [T, 3, 64], post-RoPE) and layer.{L}.q
(float16 [Tq, 9, 64]) with the `safetensors` package, appends K/V to a CPU cache
(n_kv_heads 3, head_dim 64), runs decode attention for the last query, and prints the
memory statistics: ratio = fp16 bytes / all-in bytes (compressed_bytes_used + residual_bytes).
Needs the packkv package (pip install ./bindings/python, or PYTHONPATH=<build>/bindings/python/pkg)
and the `safetensors` and `numpy` packages (pip install safetensors numpy).
"""

import argparse
import pathlib
import sys

import numpy as np
from safetensors.numpy import load_file

import packkv

DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "data" / "smollm2_kv_sample.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", nargs="?", default=str(DEFAULT))
    ap.add_argument("--layer", type=int, default=15)
    args = ap.parse_args()

    tensors = load_file(args.path)
    k = tensors[f"layer.{args.layer}.k"]
    v = tensors[f"layer.{args.layer}.v"]
    q = tensors[f"layer.{args.layer}.q"]
    n_tokens, n_kv_heads, head_dim = k.shape
    print(f"libpackkv {packkv.version()}: layer {args.layer}, K/V {k.dtype} {list(k.shape)}")

    with packkv.Cache(n_kv_heads=n_kv_heads, head_dim=head_dim, device=-1) as cache:
        cache.append(k, v)
        st = cache.stats()
        print(f"tokens {st.n_tokens} (compressed {st.n_compressed_tokens}, "
              f"residual {st.n_residual_tokens}), bits K/V {cache.params.bits_k}/"
              f"{cache.params.bits_v}")
        print(f"fp16 {st.fp16_bytes} bytes, all-in {st.all_in_bytes} bytes "
              f"(compressed {st.compressed_bytes_used} + residual {st.residual_bytes})")
        print(f"ratio {st.ratio:.2f}x")

        # One decode step with the last real query, against an fp64 softmax over the
        # uncompressed fp16 K/V: the error the compression causes.
        out = cache.decode(q[-1])
        kk = np.repeat(k.astype(np.float64).transpose(1, 0, 2), q.shape[1] // n_kv_heads, 0)
        vv = np.repeat(v.astype(np.float64).transpose(1, 0, 2), q.shape[1] // n_kv_heads, 0)
        s = np.einsum("hd,htd->ht", q[-1].astype(np.float64), kk) / np.sqrt(head_dim)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        ref = np.einsum("ht,htd->hd", p / p.sum(axis=1, keepdims=True), vv)
        err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        print(f"decode attention relative L2 error vs uncompressed fp16: {err:.2e}")
    return 0 if st.ratio > 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())

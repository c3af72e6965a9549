#!/usr/bin/env python3
"""KV backends for the numpy SmolLM2-135M model: where each layer's K/V live and how
attention over them is computed.

What
    ``scripts/kv_dump/smollm2.py`` runs SmolLM2-135M-Instruct in numpy with a plain
    float32 KV cache. This module re-runs the same forward pass (:func:`forward_chunk`,
    the same weights, RMSNorm, RoPE, SwiGLU and LM head, imported from that module, which
    is not edited) but hands every layer's attention to a *KV backend*:

    * :class:`ExactBackend`  float32 K/V, exactly the plain model (sanity reference);
    * :class:`Fp16Backend`   K/V rounded to fp16 (the uncompressed baseline, 2 B/element);
    * :class:`Fp8Backend`    fp8 e4m3 with one fp32 scale per KV head (fake quantization);
    * :class:`KiviBackend`   KIVI-b (fake quantization, 32-token groups, 128-token window);
    * :class:`PackKVBackend` one ``packkv.Cache`` per layer through the Python binding.

    The fp8 and KIVI definitions are those of ``examples/eval/baselines.cpp`` (packkv-eval),
    re-implemented in vectorized numpy: same formulas, same rounding (round half to even,
    fp16 scale and zero rounded like ``round_to_half``, e4m3 with saturation at 448), same
    byte counts (:func:`kivi_bytes`, :func:`fp8_bytes`).

How the context is read (chunked, yet exactly decode semantics)
    Tokens are fed in chunks. A backend attends the chunk's queries over (a) what its cache
    holds for the tokens before the chunk, *as the cache holds them* (compressed or
    quantized tokens in their reconstructed form, the fp16 window as fp16) and (b) the
    chunk's own K/V (fp16) with a causal mask; then it appends the chunk, and its flush
    rule compresses whatever the window releases. A query at position p therefore sees the
    cache state after p tokens plus its own token in fp16, exactly as in token-by-token
    decoding ("attend over the cache, merge the current token, append") *provided the cache
    state does not change inside a chunk*. Flush-based caches change state only at their
    flush points (``residual + k * group`` tokens, see :meth:`KVBackend.flush_points`), so
    the driver cuts chunks at every flush point of the backend (and at most ``chunk``
    tokens apart). With that, chunked and token-by-token runs give the same numbers up to
    float32 summation order; ``ppl_eval.py --check`` verifies it.

PackKV attention: library or decompress
    ``attention="library"`` computes (a) with ``packkv_attn_decode`` on the compressed
    cache: all queries of a chunk go in ONE decode call, by stacking the chunk's queries of
    each GQA group as extra query heads of that group (query head j of the call reads KV
    head j // (n_q_heads / n_kv_heads), so [kv head][token][group member] ordering maps each
    row to its own KV head); the call returns out and lse per row, (b) is computed in numpy
    with its own lse, and the two are merged exactly (softmax merge by log-sum-exp).
    ``attention="decompress"`` mirrors the cache with ``packkv_cache_decompress`` after
    every append and runs dense numpy attention on the reconstruction. The two give the same
    perplexity (the library attends on exactly the values decompress returns, fp32
    accumulation; ``ppl_eval.py --check`` measures the difference); decompress is used for
    the sweep because it is faster on 2 shared cores (a full 4096-token run: 55 s vs 127 s
    with library attention, same perplexity within rounding noise: bench/RESULTS.md).

Bytes
    All-in bytes of the final state, summed over layers: PackKV = compressed_bytes_used +
    residual_bytes from ``packkv_cache_stats``; KIVI / fp8 by the formulas of
    baselines.cpp; fp16 = 2 bytes per element. Elements = layers x tokens x KV heads x
    head_dim x 2 (K and V).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_KV_DUMP = os.path.join(os.path.dirname(_HERE), "kv_dump")
if _KV_DUMP not in sys.path:
    sys.path.insert(0, _KV_DUMP)

import smollm2  # noqa: E402  (scripts/kv_dump/smollm2.py)

KIVI_GROUP = 32      # kKiviGroup in examples/eval/baselines.h
KIVI_RESIDUAL = 128  # kKiviResidual
FP8_E4M3_MAX = 448.0


# --------------------------------------------------------------------------------------------
# Number formats (numpy versions of examples/eval/numeric.cpp)
# --------------------------------------------------------------------------------------------

def round_fp16(x: np.ndarray) -> np.ndarray:
    """x rounded to the nearest binary16 value (ties to even), returned as float32."""
    return np.asarray(x).astype(np.float16).astype(np.float32)


def round_to_half(x: np.ndarray) -> np.ndarray:
    """float64 x rounded to binary16 and back (numeric.cpp round_to_half; numpy's
    float64 -> float16 cast rounds to nearest even and overflows to inf like
    double_to_half)."""
    return np.asarray(x, dtype=np.float64).astype(np.float16).astype(np.float64)


def fp8_e4m3_round(x: np.ndarray) -> np.ndarray:
    """float64 x -> the value of its OCP fp8 e4m3 encoding (round to nearest even,
    saturation to +-448, subnormals multiples of 2^-9): fp8_e4m3_to_double(
    double_to_fp8_e4m3(x)) of numeric.cpp, vectorized."""
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    sub = np.rint(np.ldexp(a, 9)) * 2.0 ** -9          # a < 2^-6: m * 2^-9, m = rint(a*2^9)
    f, e = np.frexp(a)                                 # a = f * 2^e, f in [0.5, 1)
    mant = np.rint((2.0 * f - 1.0) * 8.0)              # 3-bit mantissa, RNE; 8 carries over
    norm = np.ldexp(1.0 + mant / 8.0, e - 1)
    v = np.where(a < 2.0 ** -6, sub, norm)
    v = np.where(a >= FP8_E4M3_MAX, FP8_E4M3_MAX, v)
    return np.copysign(v, x)


# --------------------------------------------------------------------------------------------
# Baseline quantizers and byte counts (examples/eval/baselines.cpp)
# --------------------------------------------------------------------------------------------

def flushed_tokens(n: int, group: int, residual: int) -> int:
    """Tokens stored compressed after n tokens went through a cache that flushes its oldest
    `group` tokens whenever its window holds >= residual + group tokens."""
    return 0 if n <= residual else group * ((n - residual) // group)


def kivi_quant_groups(x: np.ndarray, bits: int, axis: int) -> np.ndarray:
    """KIVI-b asymmetric min/max quantization of every group along `axis` (float64 in,
    dequantized float64 out): zero = fp16(min), scale = fp16((max - min) / (2^b - 1)),
    code = clamp(rint((x - zero) / scale), 0, 2^b - 1); a group with scale 0 reconstructs
    as its zero point (kivi_quant_group)."""
    if not 1 <= bits <= 16:
        raise ValueError("bits must be in [1, 16]")
    x = np.asarray(x, dtype=np.float64)
    qmax = float((1 << bits) - 1)
    mn = x.min(axis=axis, keepdims=True)
    mx = x.max(axis=axis, keepdims=True)
    zero = round_to_half(mn)
    scale = round_to_half((mx - mn) / qmax)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint((x - zero) / scale), 0.0, qmax)
    q = np.where(scale > 0.0, q, 0.0)
    return zero + q * scale


def kivi_quant_k(k: np.ndarray, bits: int) -> np.ndarray:
    """KIVI K: per channel over groups of 32 tokens. k: [T, H, D] with T a multiple of 32."""
    t, h, d = k.shape
    g = np.asarray(k, dtype=np.float64).reshape(t // KIVI_GROUP, KIVI_GROUP, h * d)
    return kivi_quant_groups(g, bits, axis=1).reshape(t, h, d)


def kivi_quant_v(v: np.ndarray, bits: int) -> np.ndarray:
    """KIVI V: per token over groups of 32 channels inside each head (a shorter last group
    when head_dim is not a multiple of 32). v: [T, H, D]."""
    t, h, d = v.shape
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    for c0 in range(0, d, KIVI_GROUP):
        c1 = min(d, c0 + KIVI_GROUP)
        out[:, :, c0:c1] = kivi_quant_groups(v[:, :, c0:c1], bits, axis=2)
    return out


def kivi_bytes(n_tokens: int, n_heads: int, head_dim: int, bits: int, is_k: bool) -> dict:
    """Bytes of one KIVI-b tensor (K or V) of one layer holding n tokens (kivi_bytes):
    payload ceil(values * b / 8), 4 bytes (fp16 scale + zero) per group, fp16 window."""
    row = n_heads * head_dim
    nq = flushed_tokens(n_tokens, KIVI_GROUP, KIVI_RESIDUAL)
    per_head_token = (head_dim + KIVI_GROUP - 1) // KIVI_GROUP
    groups = (nq // KIVI_GROUP) * row if is_k else nq * n_heads * per_head_token
    payload = (nq * row * bits + 7) // 8
    metadata = 4 * groups
    residual = 2 * (n_tokens - nq) * row
    return {"fp16": 2 * n_tokens * row, "payload": payload, "metadata": metadata,
            "residual": residual, "all_in": payload + metadata + residual}


def fp8_bytes(n_tokens: int, n_heads: int, head_dim: int) -> dict:
    """Bytes of one fp8 tensor of one layer: 1 byte per value + a 4-byte scale per head."""
    values = n_tokens * n_heads * head_dim
    return {"fp16": 2 * values, "payload": values, "metadata": 4 * n_heads, "residual": 0,
            "all_in": values + 4 * n_heads}


# --------------------------------------------------------------------------------------------
# Attention pieces
# --------------------------------------------------------------------------------------------

def causal_attention_lse(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_pos0: int,
                         scale: float):
    """softmax(scale q k^T) v with grouped KV heads and a causal mask, plus its log-sum-exp.

    q: [n, Hq, D] at positions q_pos0 .. q_pos0+n-1; k, v: [T, Hkv, D] at positions 0 ..
    T-1. Returns (out [n, Hq, D] float32, lse [n, Hq] float32, natural log of
    sum_t exp(scale q.k_t) over the visible keys; -inf where none is visible)."""
    n, hq, d = q.shape
    t, hkv, _ = k.shape
    g = hq // hkv
    qg = q.reshape(n, hkv, g, d).transpose(1, 2, 0, 3)                   # [Hkv, g, n, D]
    s = np.matmul(qg, k.transpose(1, 2, 0)[:, None]) * np.float32(scale)  # [Hkv, g, n, T]
    mask = np.arange(t)[None, :] > (q_pos0 + np.arange(n))[:, None]
    s = np.where(mask, np.float32(-np.inf), s)
    m = s.max(axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, np.float32(0.0))
    p = np.exp(s - m_safe)
    z = p.sum(axis=-1, keepdims=True)
    out = np.matmul(p / np.where(z > 0, z, 1), v.transpose(1, 0, 2)[:, None])
    with np.errstate(divide="ignore"):
        lse = (m_safe + np.log(z))[..., 0]                               # [Hkv, g, n]
    return (out.transpose(2, 0, 1, 3).reshape(n, hq, d).astype(np.float32),
            lse.transpose(2, 0, 1).reshape(n, hq).astype(np.float32))


def merge_attention(o1, l1, o2, l2):
    """Exact merge of two softmax attentions over disjoint key sets, given each one's
    output and log-sum-exp: out = (e^l1 o1 + e^l2 o2) / (e^l1 + e^l2)."""
    l = np.logaddexp(l1, l2)
    w1 = np.exp(np.where(np.isfinite(l1), l1 - l, -np.inf))[..., None]
    w2 = np.exp(np.where(np.isfinite(l2), l2 - l, -np.inf))[..., None]
    return (w1 * o1 + w2 * o2).astype(np.float32)


def gqa_stack(q: np.ndarray, n_kv_heads: int) -> np.ndarray:
    """[n, Hq, D] -> [n * Hq, D] ordered [kv head][token][group member], so that with
    n_q_heads = n * Hq row j reads KV head j // (n * Hq / n_kv_heads), its own KV head."""
    n, hq, d = q.shape
    g = hq // n_kv_heads
    return np.ascontiguousarray(
        q.reshape(n, n_kv_heads, g, d).transpose(1, 0, 2, 3).reshape(n * hq, d))


def gqa_unstack(x: np.ndarray, n: int, hq: int, n_kv_heads: int) -> np.ndarray:
    """Inverse of gqa_stack for [n * Hq, ...] rows -> [n, Hq, ...]."""
    g = hq // n_kv_heads
    rest = x.shape[1:]
    return np.ascontiguousarray(
        x.reshape((n_kv_heads, n, g) + rest).swapaxes(0, 1).reshape((n, hq) + rest))


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------

@dataclass
class ByteReport:
    """All-in bytes of K and V of every layer (final state) and the element count."""
    all_in: int
    elements: int
    detail: dict = field(default_factory=dict)

    @property
    def bytes_per_element(self) -> float:
        return self.all_in / self.elements if self.elements else float("nan")


class KVBackend:
    """Where a model's K/V live. One instance serves all layers of one sequence.

    Subclasses implement :meth:`attend`; the base class keeps a float32 store per layer of
    what the cache holds for each token (``self.k[layer][:length]``), which the fake-quant
    backends rewrite in place when they quantize tokens."""

    name = "backend"

    def __init__(self):
        self.cfg = None
        self.length = []

    def reset(self, cfg, max_tokens: int) -> None:
        """Prepare for a new sequence of at most max_tokens tokens."""
        self.cfg = cfg
        self.max_tokens = max_tokens
        shape = (max_tokens, cfg.n_kv_heads, cfg.head_dim)
        self.k = [np.zeros(shape, np.float32) for _ in range(cfg.n_layers)]
        self.v = [np.zeros(shape, np.float32) for _ in range(cfg.n_layers)]
        self.length = [0] * cfg.n_layers

    def flush_points(self, n_tokens: int) -> list[int]:
        """Positions p at which the cache state seen by a query changes (the query at p sees
        the cache after p tokens); the driver starts a chunk at each. None by default."""
        return []

    def store_kv(self, layer: int, p0: int, k: np.ndarray, v: np.ndarray) -> None:
        """Write the chunk's K/V as this cache holds fresh tokens (default: fp16)."""
        n = k.shape[0]
        self.k[layer][p0:p0 + n] = round_fp16(k)
        self.v[layer][p0:p0 + n] = round_fp16(v)

    def after_append(self, layer: int, n_total: int) -> None:
        """Hook after a chunk was appended (flush policies)."""

    def attend(self, layer: int, p0: int, q: np.ndarray, k: np.ndarray, v: np.ndarray):
        """Attention of the chunk's queries (positions p0 ..) over the cached past and the
        chunk itself (causal), then append the chunk. q [n, Hq, D]; k, v [n, Hkv, D]
        post-RoPE float32. Returns [n, Hq, D] float32."""
        if p0 != self.length[layer]:
            raise ValueError(f"layer {layer}: chunk at {p0}, cache holds {self.length[layer]}")
        n = q.shape[0]
        self.store_kv(layer, p0, k, v)
        out, _ = causal_attention_lse(q, self.k[layer][:p0 + n], self.v[layer][:p0 + n], p0,
                                      1.0 / math.sqrt(q.shape[-1]))
        self.length[layer] = p0 + n
        self.after_append(layer, p0 + n)
        return out

    def bytes(self) -> ByteReport:
        raise NotImplementedError

    def _elements(self) -> int:
        c = self.cfg
        return 2 * sum(self.length) * c.n_kv_heads * c.head_dim

    def close(self) -> None:
        """Free library resources (PackKV caches)."""


class ExactBackend(KVBackend):
    """float32 K/V, no rounding: the plain numpy model (4 bytes per element)."""
    name = "fp32"

    def store_kv(self, layer, p0, k, v):
        n = k.shape[0]
        self.k[layer][p0:p0 + n] = k
        self.v[layer][p0:p0 + n] = v

    def bytes(self):
        e = self._elements()
        return ByteReport(4 * e, e)


class Fp16Backend(KVBackend):
    """K/V stored in fp16 (the uncompressed reference, 2 bytes per element). Also records
    the per-layer, per-head amax of K and V, the calibration of :class:`Fp8Backend`."""
    name = "fp16"

    def reset(self, cfg, max_tokens):
        super().reset(cfg, max_tokens)
        self.amax_k = np.zeros((cfg.n_layers, cfg.n_kv_heads))
        self.amax_v = np.zeros((cfg.n_layers, cfg.n_kv_heads))

    def store_kv(self, layer, p0, k, v):
        super().store_kv(layer, p0, k, v)
        n = k.shape[0]
        kk, vv = self.k[layer][p0:p0 + n], self.v[layer][p0:p0 + n]
        self.amax_k[layer] = np.maximum(self.amax_k[layer], np.abs(kk).max(axis=(0, 2)))
        self.amax_v[layer] = np.maximum(self.amax_v[layer], np.abs(vv).max(axis=(0, 2)))

    def bytes(self):
        e = self._elements()
        return ByteReport(2 * e, e)


class Fp8Backend(KVBackend):
    """fp8 e4m3 with one fp32 scale per KV head and layer, scale = amax / 448 with amax over
    every token of the text (a calibrated static scale, as packkv-eval takes it over every
    token of the dump; here calibrated by an fp16 pass over the same text). Every token,
    the current one included, is stored (and attended) in fp8; no fp16 window."""
    name = "fp8-e4m3"

    def __init__(self, amax_k: np.ndarray, amax_v: np.ndarray):
        super().__init__()
        self.amax_k = np.asarray(amax_k, np.float64)
        self.amax_v = np.asarray(amax_v, np.float64)

    def _quant(self, x, amax):
        s = np.where(amax > 0, (amax / FP8_E4M3_MAX).astype(np.float32), np.float32(1.0))
        s = s.astype(np.float64)[None, :, None]      # stored as fp32, used as double
        return (fp8_e4m3_round(np.asarray(x, np.float64) / s) * s).astype(np.float32)

    def store_kv(self, layer, p0, k, v):
        n = k.shape[0]
        self.k[layer][p0:p0 + n] = self._quant(round_fp16(k), self.amax_k[layer])
        self.v[layer][p0:p0 + n] = self._quant(round_fp16(v), self.amax_v[layer])

    def bytes(self):
        c = self.cfg
        tot = sum(2 * fp8_bytes(n, c.n_kv_heads, c.head_dim)["all_in"] for n in self.length)
        return ByteReport(tot, self._elements())


class KiviBackend(KVBackend):
    """KIVI-b: fp16 window; whenever it holds >= 128 + 32 tokens its oldest 32 tokens are
    quantized (K per channel over the 32 tokens, V per token over 32-channel groups).

    sink_tokens = k > 0 keeps the first k tokens of the sequence in fp16 for good (attention
    sinks, as StreamingLLM / IntactKV / KVQuant keep them): KIVI then runs on the token
    stream from position k on (its groups and window start there), and the k tokens cost
    2 bytes per element."""

    def __init__(self, bits: int, sink_tokens: int = 0):
        super().__init__()
        self.bits = int(bits)
        self.sink = int(sink_tokens)
        self.name = f"kivi-{self.bits}" + (f":sink={self.sink}" if self.sink else "")

    def flush_points(self, n_tokens):
        return list(range(self.sink + KIVI_RESIDUAL + KIVI_GROUP, n_tokens + 1, KIVI_GROUP))

    def reset(self, cfg, max_tokens):
        super().reset(cfg, max_tokens)
        self.n_quantized = [self.sink] * cfg.n_layers

    def after_append(self, layer, n_total):
        nq = self.sink + flushed_tokens(max(0, n_total - self.sink), KIVI_GROUP, KIVI_RESIDUAL)
        a = self.n_quantized[layer]
        if nq > a:
            self.k[layer][a:nq] = kivi_quant_k(self.k[layer][a:nq], self.bits)
            self.v[layer][a:nq] = kivi_quant_v(self.v[layer][a:nq], self.bits)
            self.n_quantized[layer] = nq

    def bytes(self):
        c = self.cfg
        tot = 0
        for n in self.length:
            s = min(n, self.sink)
            tot += 2 * 2 * s * c.n_kv_heads * c.head_dim          # sink K and V in fp16
            tot += kivi_bytes(n - s, c.n_kv_heads, c.head_dim, self.bits, True)["all_in"]
            tot += kivi_bytes(n - s, c.n_kv_heads, c.head_dim, self.bits, False)["all_in"]
        return ByteReport(tot, self._elements())


class PackKVBackend(KVBackend):
    """One ``packkv.Cache`` per layer (CPU, kv_dtype F16).

    Args:
        cache_kwargs: keyword arguments of ``packkv.Cache`` (rel_scale_k, rel_scale_v,
            repack, scale_granularity, residual_tokens, block_tokens, bits_k, bits_v, and
            whatever newer levers the installed binding accepts, e.g. sink_tokens).
        attention: "library" (packkv_attn_decode over the compressed cache, merged with the
            chunk's own causal attention by lse) or "decompress" (dense numpy attention on
            packkv_cache_decompress's reconstruction); see the module docstring.
        shadow_repacks: extra repacking modes whose bytes are measured on the same token
            stream by shadow caches (repacking permutes tokens inside a block and never
            changes a reconstructed value, so one forward pass serves every mode; the
            shadows' reconstructions are checked identical at the end).
        emulated_sinks: k > 0 keeps the first k tokens of the sequence in fp16 OUTSIDE the
            library (the harness's emulation of attention-sink tokens, for a library that
            has no ``sink_tokens`` yet): the caches see the stream from position k on, the
            dense attention reads the k tokens as fp16 (exact merge: they are simply part
            of the attended keys), and they are counted as 2 bytes per element
            (``stats["sink_bytes"]``). Needs attention="decompress".
    """

    def __init__(self, attention: str = "decompress", shadow_repacks=(), name=None,
                 emulated_sinks: int = 0, **cache_kwargs):
        super().__init__()
        import packkv  # the SWIG binding (bindings/python)
        self._packkv = packkv
        if attention not in ("library", "decompress"):
            raise ValueError("attention must be 'library' or 'decompress'")
        self.sink = int(emulated_sinks)
        if self.sink and attention != "decompress":
            raise ValueError("emulated sink tokens need attention='decompress'")
        self.attention = attention
        self.cache_kwargs = dict(cache_kwargs)
        self.shadow_repacks = [r for r in shadow_repacks
                               if r != self.cache_kwargs.get("repack", "median")]
        self.name = name or "packkv"
        self.caches = []
        self.shadows = {}

    def _new_cache(self, **over):
        kw = dict(self.cache_kwargs)
        kw.update(over)
        c = self.cfg
        raw = kw.pop("raw_fields", None)
        if not raw:
            return self._packkv.Cache(n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
                                      device=-1, kv_dtype="float16",
                                      max_tokens_per_seq=self.max_tokens, **kw)
        # Fields of packkv_cache_params_t that the binding's Cache() does not take as
        # keywords yet (the library's v2 fields before the binding exposes them): set on the
        # raw struct right after packkv_cache_params_init, inside Cache.__init__.
        import packkv.cache as pc
        init = pc._raw.cache_params_init

        def init_with_fields(p, size):
            st = init(p, size)
            for name, value in raw.items():
                setattr(p, name, value)
            return st

        pc._raw.cache_params_init = init_with_fields
        try:
            return self._packkv.Cache(n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
                                      device=-1, kv_dtype="float16",
                                      max_tokens_per_seq=self.max_tokens, **kw)
        finally:
            pc._raw.cache_params_init = init

    def reset(self, cfg, max_tokens):
        self.close()
        super().reset(cfg, max_tokens)
        self.caches = [self._new_cache() for _ in range(cfg.n_layers)]
        self.shadows = {r: [self._new_cache(repack=r) for _ in range(cfg.n_layers)]
                        for r in self.shadow_repacks}
        p = self.caches[0].params
        self.block, self.residual = int(p.block_tokens), int(p.residual_tokens)
        self.n_compressed = [0] * cfg.n_layers
        self._flush = None

    @property
    def params(self):
        """Effective parameters of the layer caches (derived bit widths filled in)."""
        return self.caches[0].params

    def flush_points(self, n_tokens):
        """Measured, not assumed: a probe cache with the same parameters is fed random
        tokens one at a time (after the emulated sinks) and every position after which
        n_compressed_tokens changed is a flush point. This covers any flush rule of the
        library (sink tokens of a newer library included)."""
        if self._flush is None or self._flush[0] < n_tokens:
            c = self.cfg
            probe = self._new_cache(repack="none")
            rng = np.random.default_rng(0)
            x = rng.standard_normal((n_tokens, c.n_kv_heads, c.head_dim)).astype(np.float16)
            pts, last = [], 0
            for p in range(self.sink, n_tokens):
                probe.append(x[p:p + 1], x[p:p + 1])
                nc = int(probe.stats().n_compressed_tokens)
                if nc != last:
                    pts.append(p + 1)
                    last = nc
            probe.close()
            self._flush = (n_tokens, pts)
        return [p for p in self._flush[1] if p <= n_tokens]

    def attend(self, layer, p0, q, k, v):
        if p0 != self.length[layer]:
            raise ValueError(f"layer {layer}: chunk at {p0}, cache holds {self.length[layer]}")
        n, hq, d = q.shape
        hkv = k.shape[1]
        cache = self.caches[layer]
        k16 = np.ascontiguousarray(k, dtype=np.float16)
        v16 = np.ascontiguousarray(v, dtype=np.float16)
        scale = 1.0 / math.sqrt(d)
        if self.attention == "library":
            kc, vc = k16.astype(np.float32), v16.astype(np.float32)
            o2, l2 = causal_attention_lse(q, kc, vc, 0, scale)
            if p0 > 0:
                qs = gqa_stack(np.ascontiguousarray(q, dtype=np.float32), hkv)
                o1, l1 = cache.decode(qs, scale=scale, return_lse=True)
                o1 = gqa_unstack(o1, n, hq, hkv)
                l1 = gqa_unstack(l1, n, hq, hkv)
                out = merge_attention(o1, l1, o2, l2)
            else:
                out = o2
        else:
            self.k[layer][p0:p0 + n] = k16
            self.v[layer][p0:p0 + n] = v16
            out, _ = causal_attention_lse(q, self.k[layer][:p0 + n], self.v[layer][:p0 + n],
                                          p0, scale)
        s = max(0, min(n, self.sink - p0))        # this chunk's emulated sink tokens
        if s < n:
            cache.append(k16[s:], v16[s:])
            for caches in self.shadows.values():
                caches[layer].append(k16[s:], v16[s:])
        self.length[layer] = p0 + n
        if self.attention == "decompress":
            nc = int(cache.stats().n_compressed_tokens)
            if nc > self.n_compressed[layer]:
                kd, vd = cache.decompress()
                self.k[layer][self.sink:p0 + n] = kd
                self.v[layer][self.sink:p0 + n] = vd
                self.n_compressed[layer] = nc
        return out

    def stats_sum(self, caches=None) -> dict:
        """packkv_cache_stats summed over layers (all sequences), plus the emulated sink
        tokens' fp16 bytes (sink_bytes) and all_in = compressed_bytes_used + residual_bytes
        + sink_bytes."""
        tot: dict = {}
        for c in (caches or self.caches):
            for key, val in c.stats().as_dict().items():
                tot[key] = tot.get(key, 0) + int(val)
        c = self.cfg
        tot["sink_bytes"] = sum(2 * 2 * min(n, self.sink) * c.n_kv_heads * c.head_dim
                                for n in self.length)
        tot["all_in"] = tot["compressed_bytes_used"] + tot["residual_bytes"] + tot["sink_bytes"]
        return tot

    def bytes(self):
        s = self.stats_sum()
        detail = {"stats": s, "repack": {}}
        detail["repack"][self.cache_kwargs.get("repack", "median")] = s["all_in"]
        for r, caches in self.shadows.items():
            detail["repack"][r] = self.stats_sum(caches)["all_in"]
        return ByteReport(s["all_in"], self._elements(), detail)

    def check_shadows(self) -> None:
        """Every shadow cache reconstructs exactly the main cache's K/V (repacking is
        lossless). Raises AssertionError otherwise."""
        for r, caches in self.shadows.items():
            for li, c in enumerate(caches):
                a, b = self.caches[li].decompress(), c.decompress()
                if not (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])):
                    raise AssertionError(f"repack {r}: layer {li} reconstructs differently")

    def close(self):
        for c in self.caches:
            c.close()
        for caches in self.shadows.values():
            for c in caches:
                c.close()
        self.caches, self.shadows = [], {}


# --------------------------------------------------------------------------------------------
# The model with a backend
# --------------------------------------------------------------------------------------------

def forward_chunk(model: "smollm2.SmolLM2", tokens, p0: int, backend: KVBackend,
                  want_logits: bool = True):
    """SmolLM2.forward for one chunk at positions p0 .., with every layer's attention served
    by `backend` (which appends the chunk's K/V). Same arithmetic as smollm2.SmolLM2.forward
    (functions imported from it); returns logits [n, vocab] or None. A model with its own
    ``forward_backend`` (scripts/kv_dump/gemma3.py) runs that instead."""
    if hasattr(model, "forward_backend"):
        return model.forward_backend(tokens, p0, backend, want_logits)
    cfg, w = model.cfg, model.w.t
    tokens = np.asarray(tokens, dtype=np.int64)
    n = tokens.shape[0]
    hq, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    cos, sin = smollm2.rope_tables(np.arange(p0, p0 + n), d, cfg.rope_theta)
    x = w["token_embd.weight"][tokens]
    for li in range(cfg.n_layers):
        pre = f"blk.{li}."
        h = smollm2.rms_norm(x, w[pre + "attn_norm.weight"], cfg.rms_eps)
        q = (h @ w[pre + "attn_q.weight"].T).reshape(n, hq, d)
        k = (h @ w[pre + "attn_k.weight"].T).reshape(n, hkv, d)
        v = (h @ w[pre + "attn_v.weight"].T).reshape(n, hkv, d)
        q = smollm2.apply_rope(q, cos, sin, model.rope_layout)
        k = smollm2.apply_rope(k, cos, sin, model.rope_layout)
        attn = backend.attend(li, p0, q, k, v)
        x = x + attn.reshape(n, hq * d) @ w[pre + "attn_output.weight"].T
        h = smollm2.rms_norm(x, w[pre + "ffn_norm.weight"], cfg.rms_eps)
        gate = h @ w[pre + "ffn_gate.weight"].T
        up = h @ w[pre + "ffn_up.weight"].T
        x = x + (smollm2.silu(gate) * up) @ w[pre + "ffn_down.weight"].T
    if not want_logits:
        return None
    h = smollm2.rms_norm(x, w["output_norm.weight"], cfg.rms_eps)
    return h @ model.w.lm_head.T


def chunk_bounds(n_tokens: int, chunk: int, flush_points=(), extra=()) -> list[int]:
    """Chunk boundaries 0 = b0 < b1 < ... = n_tokens: every multiple of `chunk`, every
    flush point and every extra boundary below n_tokens."""
    b = set(range(0, n_tokens, chunk)) | {p for p in flush_points if 0 < p < n_tokens}
    b |= {p for p in extra if 0 < p < n_tokens}
    return sorted(b) + [n_tokens]

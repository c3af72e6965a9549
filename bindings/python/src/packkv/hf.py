"""packkv.hf: Hugging Face transformers models on a packkv cache.

Quick start::

    import packkv.hf
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=packkv.hf.register())
    cache = packkv.hf.PackKVCache(model.config)   # the library's defaults (packkv.h)
    out = model.generate(**inputs, **packkv.hf.cache_argument(cache, model), max_new_tokens=32)
    print(packkv.hf.cache_memory(cache))

How it plugs in
    transformers calls ``cache.update(k, v, layer_idx)`` in every attention layer and then the
    attention function registered under the model's ``attn_implementation``.
    :class:`PackKVCache` holds one :class:`PackKVLayer` per attention layer (one
    ``packkv.Cache`` each, one packkv sequence per batch row). A sliding-window layer's
    packkv cache has packkv's sliding window (``packkv.Cache.set_window``, W - 1 tokens for
    the model's window W: a query attends to itself and the W - 1 tokens before it, as
    transformers' sliding-window mask does), so its memory stays bounded (blocks that leave
    the window are freed). Where libpackkv has no sliding window (CUDA caches of a library
    without it: NotSupported from set_window) that layer becomes transformers'
    ``DynamicSlidingWindowLayer`` at its first update, with a UserWarning.

    A PackKVLayer's ``update()`` stores nothing: it returns the new chunk, tagged with the
    layer. The attention function (:func:`packkv_attention`, registered by
    :func:`register`) then attends the chunk's queries over

    (a) the tokens packkv holds (sink tokens, compressed blocks and residual window), with
        ``packkv.Cache.decode_multi(..., return_lse=True)`` (packkv_attn_decode_multi): all
        queries of the chunk in one call, in torch's [batch, heads, tokens, head_dim] layout;
        and
    (b) the chunk itself, causally, in float32 from the K/V rounded to kv_dtype, as the
        cache stores them (kv_dtype: float16 for a float32 model, else the model's dtype),

    merges (a) and (b) exactly by log-sum-exp, then appends the chunk. A sliding-window
    layer does the same for a single query (decoding) and while no query of the chunk has
    lost a token to the window; otherwise each query needs its own window, which packkv's
    decode_multi (masking by the sequence's length) cannot express, so the chunk's queries
    attend over the cache's window tokens as ``packkv.Cache.decompress`` reconstructs them
    (the values packkv's attention reads) and the chunk, with a per-query window mask, in
    float32. The chunk is cut at
    the sequence's flush points (packkv.h, packkv_cache_append: the first sink_tokens tokens
    become sink tokens, then a block is compressed when the residual window reaches
    residual_tokens + block_tokens tokens), so every query sees the
    cache exactly as token-by-token decoding would: chunked and token-by-token prefill give
    the same outputs up to float32 summation order.

    The registered mask function (:func:`packkv_mask`) hands the attention function the 2D
    padding mask of the chunk (padded tokens are never stored: each batch row stores its own
    real tokens) and builds transformers' SDPA mask only for the layers that need one
    (sliding-window layers left on transformers' cache, and every layer when the cache is not
    a PackKVCache, which then run transformers' SDPA attention).

Devices: CPU tensors use a CPU packkv cache; CUDA tensors a CUDA cache on the tensor's device
(needs a CUDA build of libpackkv), with all K/V and attention data staying on the device
(the per-row token counts are read on the host once per forward).

Batch and rollback operations (CPU and CUDA caches): beam search (``reorder_cache``) and
``batch_select_indices`` / ``batch_repeat_interleave`` map batch rows to packkv sequences and
copy a row with packkv's fork (compressed blocks shared, not copied); assisted/speculative
decoding (``crop``) truncates every row by the real tokens of the cropped positions.
``copy.deepcopy(cache)`` (prompt reuse) copies every row into new packkv caches by export and
import: the same compressed bytes, so the copy continues exactly as the original would.

Unsupported (raise :class:`NotImplementedError` naming the missing operation): cache
offloading, attention dropout in training, logit softcapping, custom 4D attention masks, layer
types other than full and sliding-window attention.

Requires torch and transformers >= 5.17 (scripts/requirements-hf.txt); ``import packkv``
itself never imports them.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

try:
    import torch
    import transformers
    from transformers import AttentionInterface
    from transformers.cache_utils import Cache, CacheLayerMixin, DynamicSlidingWindowLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "packkv.hf needs torch and transformers >= 5.17 (pip install -r "
        f"scripts/requirements-hf.txt): {exc}") from exc

from ._arrays import DTYPE_NAMES as _DTYPE_NAMES
from ._errors import NotSupported
from .cache import Cache as PackKV

__all__ = ["ATTN_IMPLEMENTATION", "register", "PackKVCache", "PackKVLayer", "packkv_attention",
           "packkv_mask", "cache_argument", "cache_memory"]

#: The name under which :func:`register` registers the attention and mask functions.
ATTN_IMPLEMENTATION = "packkv"

_LAYER_ATTR = "_packkv_layer"   # attribute of the key tensor update() returns


def register(name: str = ATTN_IMPLEMENTATION) -> str:
    """Registers :func:`packkv_attention` with transformers' AttentionInterface and
    :func:`packkv_mask` with its AttentionMaskInterface under `name` (idempotent; both are
    needed: without a registered mask function transformers passes no mask at all).
    Returns `name`, for ``from_pretrained(..., attn_implementation=register())`` or
    ``model.set_attn_implementation(register())``."""
    AttentionInterface.register(name, packkv_attention)
    AttentionMaskInterface.register(name, packkv_mask)
    return name


def cache_argument(cache: Cache, model=None) -> dict:
    """The keyword argument that passes `cache` to ``model.generate`` / ``model(...)``:
    ``{"cache": cache}`` where the model's forward takes ``cache`` (transformers 5.25 renamed
    it), else ``{"past_key_values": cache}`` (5.17). Decided from ``model.forward``'s
    signature (LlamaForCausalLM's when model is None), so that no version emits a
    deprecation warning: ``model.generate(**inputs, **cache_argument(c, model))``."""
    import inspect
    forward = model.forward if model is not None else transformers.LlamaForCausalLM.forward
    params = inspect.signature(forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


# ---------------------------------------------------------------------------------------------
# Mask
# ---------------------------------------------------------------------------------------------

class PackKVMask:
    """What :func:`packkv_mask` returns: the mask arguments of one forward, evaluated lazily.

    ``padding``: bool [batch, q_length] (True = real token) of the forward's new tokens, or
    None when no 2D attention mask was given (every token real). ``sdpa()``: transformers'
    SDPA mask for these arguments (built once, for layers that attend the usual way)."""

    def __init__(self, kwargs: dict):
        self._kwargs = kwargs
        self._sdpa = None
        self._sdpa_built = False
        self._counts = None

    @property
    def q_length(self) -> int:
        return int(self._kwargs["q_length"])

    @property
    def padding(self):
        mask = self._kwargs.get("attention_mask")
        if mask is None:
            return None
        return mask[:, -self.q_length:].to(torch.bool)

    def counts(self) -> list | None:
        """Real tokens per batch row in the new chunk (host ints; one device read per
        forward, shared by all layers), or None when every token is real."""
        if self._counts is None:
            pad = self.padding
            if pad is None:
                self._counts = False
            else:
                c = pad.sum(dim=1).tolist()
                self._counts = False if all(x == self.q_length for x in c) else c
        return self._counts or None

    def sdpa(self):
        if not self._sdpa_built:
            self._sdpa = sdpa_mask(**self._kwargs)
            self._sdpa_built = True
        return self._sdpa


def packkv_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0,
                kv_offset: int = 0, mask_function=None, attention_mask=None, **kwargs):
    """Mask function registered by :func:`register` (the AttentionMaskInterface signature:
    transformers calls it once per mask type per forward). Returns a :class:`PackKVMask`
    carrying its arguments; nothing is materialized until a layer asks for it."""
    args = dict(kwargs, batch_size=batch_size, q_length=q_length, kv_length=kv_length,
                q_offset=q_offset, kv_offset=kv_offset, attention_mask=attention_mask)
    if mask_function is not None:
        args["mask_function"] = mask_function
    for k in ("dtype", "config"):   # eager/flex-only arguments sdpa_mask does not take
        args.pop(k, None)
    return PackKVMask(args)


# ---------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------

def packkv_attention(module, query, key, value, attention_mask, scaling: float | None = None,
                     dropout: float = 0.0, **kwargs):
    """Attention function registered by :func:`register` (AttentionInterface signature).

    query [batch, n_q_heads, q_len, head_dim]; key, value [batch, n_kv_heads, q_len,
    head_dim] as returned by the cache's update(). For a :class:`PackKVLayer` the key
    tensor is the new chunk tagged with its layer and the attention runs through packkv
    (module docstring); for any other cache layer (a sliding-window layer on transformers'
    cache, or a cache that is not a PackKVCache) it is transformers' SDPA attention with the
    usual mask.
    Returns (out [batch, q_len, n_q_heads, head_dim] in query's dtype, None)."""
    if kwargs.get("softcap") is not None:
        raise NotImplementedError("packkv.hf: attention logit softcapping is not supported")
    layer = getattr(key, _LAYER_ATTR, None)
    if layer is None:
        mask = attention_mask.sdpa() if isinstance(attention_mask, PackKVMask) else attention_mask
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if dropout and module.training:
        raise NotImplementedError("packkv.hf: attention dropout (training) is not supported")
    if attention_mask is not None and not isinstance(attention_mask, PackKVMask):
        raise NotImplementedError(
            "packkv.hf: custom attention masks are not supported; pass the 2D padding mask "
            "(attention_mask [batch, tokens]) and let the packkv mask function build the rest")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    counts = attention_mask.counts() if attention_mask is not None else None
    padding = attention_mask.padding if counts is not None else None
    return layer.attend(query, key, value, padding, counts, float(scaling)), None


# ---------------------------------------------------------------------------------------------
# Cache layer
# ---------------------------------------------------------------------------------------------

def _unsupported(what: str, needs: str):
    raise NotImplementedError(f"packkv.hf: {what} is not supported: it needs {needs}, "
                              "which libpackkv does not have yet")


class PackKVLayer(CacheLayerMixin):
    """One attention layer of a :class:`PackKVCache` (full attention, or sliding window
    with `sliding_window`): a ``packkv.Cache`` holding batch row b as packkv sequence
    ``rows[b]`` (max_seqs = the batch size of the first update; beam search and batch
    selection remap rows, forking a row that is copied).

    ``update()`` returns the new chunk (tagged for :func:`packkv_attention`, which appends
    it after attending); ``get_seq_length()`` counts positions as transformers does
    (padding included), while packkv stores only each row's real tokens. The layer keeps,
    per forward, how many tokens of each row were real (and, for a forward with padding,
    which), so that ``crop`` removes from each row exactly the real tokens of the cropped
    positions."""

    is_sliding = False
    is_compileable = False
    is_croppable = True
    supports_early_init = False

    def __init__(self, sliding_window: int | None = None, **params):
        super().__init__()
        if sliding_window is not None and int(sliding_window) < 2:
            raise NotImplementedError(f"packkv.hf: sliding_window={sliding_window} is not supported "
                                      "(a window of 1 token attends to nothing in the cache)")
        #: the model's sliding window W (None: a full-attention layer); the packkv cache then
        #: holds a window of W - 1 tokens (the query itself is the W-th).
        self.sliding_window = None if sliding_window is None else int(sliding_window)
        self.is_sliding = self.sliding_window is not None
        self.params = dict(params)
        self.packkv: PackKV | None = None
        self.batch_size_ = 0
        self.positions = 0       # positions seen, padding included (transformers' length)
        self._pending = False    # an update() whose chunk no attention call has consumed
        self.rows: list = []     # packkv sequence id of each batch row
        # per attended chunk: [q_len, real tokens per row (None: all real), host bool
        # padding [rows, q_len] (None: no padding)]
        self._chunks: list = []
        self._create: dict = {}

    def lazy_initialization(self, key_states, value_states) -> None:
        b, h, _, d = key_states.shape
        dev = key_states.device
        params = dict(self.params)
        params.setdefault("kv_dtype", torch.float16 if key_states.dtype == torch.float32
                          else key_states.dtype)
        self._create = dict(params, n_kv_heads=h, head_dim=d,
                            device=dev.index if dev.type == "cuda" else -1)
        self.packkv = self._new_cache(b)
        self.batch_size_ = b
        self.rows = list(range(b))
        self._chunks = []
        self.device = dev
        self.kv_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                         "float32": torch.float32}[_DTYPE_NAMES[self.packkv.params.kv_dtype]]
        self.is_initialized = True

    def _new_cache(self, max_seqs: int) -> PackKV:
        """A packkv cache of this layer's parameters (and sliding window) for max_seqs rows;
        raises the library's error (packkv.NotSupported for a window it lacks)."""
        cache = PackKV(max_seqs=max_seqs, **self._create)
        if self.sliding_window is not None:
            try:
                cache.set_window(self.sliding_window - 1)
            except BaseException:
                cache.close()
                raise
        return cache

    def update(self, key_states, value_states, *args, **kwargs):
        if self._pending:
            raise RuntimeError(
                "packkv.hf: the previous chunk of this layer was never attended: the model "
                f"does not use the '{ATTN_IMPLEMENTATION}' attention implementation (load it "
                "with attn_implementation=packkv.hf.register())")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != self.batch_size_:
            raise ValueError(f"packkv.hf: batch size {key_states.shape[0]}, but this cache holds "
                             f"{self.batch_size_} sequences (use a new cache or reset() it)")
        self.positions += key_states.shape[-2]
        self._pending = True
        k = key_states.view(key_states.shape)      # a new tensor object to tag
        setattr(k, _LAYER_ATTR, self)
        return k, value_states

    def load(self, key_states, value_states) -> None:
        """Stores the K/V of a prefix without attending over it: key_states, value_states
        [batch, n_kv_heads, tokens, head_dim] (every token real, torch tensors on the
        layer's device, any float dtype: cast to the layer's kv_dtype), as the model's
        update() would have passed them, e.g. K/V that another cache or process computed
        (a shared prompt; bench/hf_study.py fills caches this way). Creates the packkv cache
        at the first call like update(); the batch size must then match. The tokens go
        through packkv's append, so they are compressed exactly as a prefill would compress
        them (blocks released at the same flush points). Raises ValueError for a batch or
        shape mismatch, RuntimeError while an update() awaits its attention."""
        if self._pending:
            raise RuntimeError("packkv.hf: load() while an update() awaits its attention call")
        if key_states.dim() != 4 or key_states.shape != value_states.shape:
            raise ValueError("packkv.hf: load() takes key_states and value_states of one shape "
                             f"[batch, n_kv_heads, tokens, head_dim], got {tuple(key_states.shape)} "
                             f"and {tuple(value_states.shape)}")
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, h, t, d = key_states.shape
        if b != self.batch_size_:
            raise ValueError(f"packkv.hf: batch size {b}, but this cache holds {self.batch_size_} "
                             "sequences")
        if t == 0:
            return
        k, v = (x.transpose(1, 2).to(self.kv_dtype).reshape(b * t, h, d).contiguous()
                for x in (key_states, value_states))
        self.packkv.append(k, v, list(self.rows), [t] * b)
        self.positions += t
        self._chunks.append([t, None, None])

    # -- the attention itself ----------------------------------------------------------------
    def _pieces(self, n: int, row: int) -> list:
        """Cuts n new tokens of one batch row at its flush points: the first piece fills the
        sink tokens and then the residual window to residual_tokens + block_tokens, then
        block_tokens each (packkv.h, packkv_cache_append: a flush compresses exactly one
        block at those points; sink tokens are never compressed)."""
        if n <= 1:
            return [n]
        p = self.packkv.params
        seq = self.rows[row]
        sinks = min(self.packkv.seq_length(seq), p.sink_tokens)
        window = self.packkv.stats(seq).n_residual_tokens - sinks   # the stat counts the sinks
        first = (p.sink_tokens - sinks) + p.residual_tokens + p.block_tokens - window
        out = [min(n, first)]
        while sum(out) < n:
            out.append(min(p.block_tokens, n - sum(out)))
        return out

    def attend(self, query, key, value, padding, counts, scale: float):
        """Attention of the chunk's queries over the cache and the chunk, then appends the
        chunk (module docstring). counts: real tokens per row (None: all q_len real);
        padding: bool [batch, q_len] when counts is given. Returns [batch, q_len, n_q_heads,
        head_dim] in query's dtype; padded positions are zero."""
        self._pending = False
        b, hq, t, d = query.shape
        self._chunks.append([t, list(counts) if counts is not None else None,
                             padding.cpu() if counts is not None else None])
        hkv = key.shape[1]
        qt, kt, vt = (x.transpose(1, 2) for x in (query, key, value))   # [b, t, heads, d]
        out = torch.zeros((b, t, hq, d), dtype=query.dtype, device=query.device)
        n_of = counts if counts is not None else [t] * b
        groups: dict = {}
        for seq, n in enumerate(n_of):
            if n:
                groups.setdefault(tuple(self._pieces(n, seq)), []).append(seq)
        for pieces, seqs in groups.items():
            if counts is None:
                idx = torch.tensor(seqs, device=query.device) if len(seqs) < b else None
                sel = (lambda x: x) if idx is None else (lambda x: x.index_select(0, idx))
                q, k, v = sel(qt), sel(kt), sel(vt)
            else:   # the real tokens of each row, in order
                rows = [padding[s].nonzero().squeeze(1) for s in seqs]
                q, k, v = (torch.stack([x[s, r] for s, r in zip(seqs, rows)])
                           for x in (qt, kt, vt))
            o = self._attend_rows(seqs, pieces, q, k, v, hkv, scale)
            if counts is None:
                if idx is None:
                    out = o
                else:
                    out.index_copy_(0, idx, o)
            else:
                for i, (s, r) in enumerate(zip(seqs, rows)):
                    out[s, r] = o[i]
        return out

    def _attend_rows(self, seqs, pieces, q, k, v, hkv: int, scale: float):
        """q [G, n, hq, d], k/v [G, n, hkv, d] of G batch rows with the same pieces."""
        g_, n, hq, d = q.shape
        seqs = [self.rows[r] for r in seqs]
        grp = hq // hkv
        outs = []
        start = 0
        for m in pieces:
            qs, ks, vs = q[:, start:start + m], k[:, start:start + m], v[:, start:start + m]
            start += m
            if self.sliding_window is not None and m > 1 and any(
                    self.packkv.seq_length(s) + m > self.sliding_window for s in seqs):
                outs.append(self._attend_window(seqs, qs, ks, vs, hkv, scale))
                continue
            # (a) the past through packkv: the m queries of each head, [G, hq, m, d] as torch
            # holds them (packkv_attn_decode_multi, packkv_experimental.h).
            o_p, l_p = self.packkv.decode_multi(qs.transpose(1, 2).contiguous(), seqs,
                                                scale=scale, return_lse=True)
            o_p = o_p.reshape(g_, hkv, grp, m, d).permute(0, 3, 1, 2, 4)     # [G, m, hkv, grp, d]
            l_p = l_p.reshape(g_, hkv, grp, m).permute(0, 3, 1, 2)            # [G, m, hkv, grp]
            # (b) the piece itself, causally, float32, from K/V as the cache stores them.
            ks, vs = ks.to(self.kv_dtype), vs.to(self.kv_dtype)
            qf = qs.float().reshape(g_, m, hkv, grp, d)
            s = torch.einsum("gihjd,gkhd->gihjk", qf, ks.float()) * scale    # [G, m, hkv, grp, m]
            causal = torch.ones((m, m), dtype=torch.bool, device=q.device).triu(1)
            s = s.masked_fill(causal[None, :, None, None, :], float("-inf"))
            l_c = torch.logsumexp(s, dim=-1)
            o_c = torch.einsum("gihjk,gkhd->gihjd", torch.exp(s - l_c[..., None]), vs.float())
            # exact merge: (e^l_p o_p + e^l_c o_c) / (e^l_p + e^l_c); l_c is finite.
            l_all = torch.logaddexp(l_p, l_c)
            o = (torch.exp(l_p - l_all)[..., None] * o_p
                 + torch.exp(l_c - l_all)[..., None] * o_c)
            outs.append(o.reshape(g_, m, hq, d).to(q.dtype))
            self.packkv.append(ks.reshape(g_ * m, hkv, d).contiguous(),
                               vs.reshape(g_ * m, hkv, d).contiguous(), seqs, [m] * g_)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def _attend_window(self, seqs, q, k, v, hkv: int, scale: float):
        """Sliding-window attention of a piece of m > 1 queries per row (packkv sequences
        seqs), q [G, m, hq, d], k/v [G, m, hkv, d]: query i of a row holding L tokens sits
        at position L + i and attends to the positions in (L + i - W, L + i], the cached
        ones as packkv.Cache.decompress reconstructs them. Appends the piece. Returns
        [G, m, hq, d] in q's dtype."""
        g_, m, hq, d = q.shape
        w_ = self.sliding_window
        grp = hq // hkv
        dev = q.device
        ks, vs = k.to(self.kv_dtype), v.to(self.kv_dtype)
        outs = []
        for g, seq in enumerate(seqs):
            n = self.packkv.seq_length(seq)
            held = min(n, w_ - 1)               # the window's tokens [n - held, n)
            kc, vc = (torch.as_tensor(x, device=dev)[n - held:]
                      for x in self.packkv.decompress(seq))
            keys = torch.cat([kc, ks[g].float()])                         # [held + m, hkv, d]
            vals = torch.cat([vc, vs[g].float()])
            pos_q = torch.arange(n, n + m, device=dev)
            pos_k = torch.arange(n - held, n + m, device=dev)
            allowed = (pos_k[None, :] <= pos_q[:, None]) & (pos_k[None, :] > pos_q[:, None] - w_)
            qf = q[g].float().reshape(m, hkv, grp, d)
            s = torch.einsum("ihjd,khd->ihjk", qf, keys) * scale          # [m, hkv, grp, keys]
            s = s.masked_fill(~allowed[:, None, None, :], float("-inf"))
            o = torch.einsum("ihjk,khd->ihjd", torch.softmax(s, dim=-1), vals)
            outs.append(o.reshape(m, hq, d).to(q.dtype))
        self.packkv.append(ks.reshape(g_ * m, hkv, d).contiguous(),
                           vs.reshape(g_ * m, hkv, d).contiguous(), seqs, [m] * g_)
        return torch.stack(outs)

    # -- CacheLayerMixin ---------------------------------------------------------------------
    def get_seq_length(self) -> int:
        return self.positions

    def get_max_length(self) -> int:
        return -1

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.positions + query_length, 0

    def reset(self) -> None:
        """Empties the layer; the next update() may bring another batch size or device."""
        self.close()
        self.packkv = None
        self.is_initialized = False
        self.batch_size_ = 0
        self.positions = 0
        self._pending = False
        self.rows = []
        self._chunks = []

    def memory(self) -> dict:
        """packkv's accounting of this layer (packkv.Stats as a dict), {} before the first
        update."""
        return self.packkv.stats().as_dict() if self.packkv is not None else {}

    # -- batch and rollback operations (packkv fork and truncate) ---------------------------
    def reorder_cache(self, beam_idx) -> None:
        """Beam search: new batch row i continues old row beam_idx[i]."""
        self._select_rows(beam_idx)

    def batch_select_indices(self, indices) -> None:
        """Keeps the batch rows `indices` (in that order; repeats allowed)."""
        self._select_rows(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each batch row becomes `repeats` consecutive rows (e.g. num_return_sequences)."""
        if self.is_initialized:
            self._select_rows([r for r in range(self.batch_size_) for _ in range(int(repeats))])

    def crop(self, tokens_to_remove: int) -> None:
        """Removes the last -tokens_to_remove positions (transformers >= 5.2x: a negative
        count; 0 does nothing); a positive value is the length to keep (earlier transformers'
        crop(max_length)). Each row loses the real tokens of the cropped positions
        (packkv_x_cache_truncate: tokens still in the residual window go at no cost, a
        compressed block that is cut returns to the window from its stored values). A
        sliding-window layer can be cropped only while its window has not moved (fewer than
        W tokens seen): after a crop the next queries' windows reach back before the window
        start, whose tokens were freed; ValueError then, and nothing changes."""
        plan = self._crop_plan(tokens_to_remove)
        if plan is None:
            return
        remove, lost, chunks = plan
        for r, gone in enumerate(lost):
            if gone:
                seq = self.rows[r]
                self.packkv.truncate(seq, self.packkv.seq_length(seq) - gone)
        self._chunks = chunks
        self.positions -= remove

    def _crop_plan(self, tokens_to_remove: int):
        """What crop(tokens_to_remove) does, changing nothing: None (nothing to do) or
        (positions removed, real tokens lost per row, the chunk records after it); raises
        ValueError where crop would fail."""
        n = int(tokens_to_remove)
        remove = -n if n < 0 else max(0, self.positions - n) if n > 0 else 0
        if remove == 0 or not self.is_initialized:
            return None
        if remove > self.positions:
            raise ValueError(f"packkv.hf: crop({n}) removes {remove} positions, the cache holds "
                             f"{self.positions}")
        lost = [0] * self.batch_size_
        left, chunks = remove, list(self._chunks)
        while left:
            q_len, counts, pad = chunks[-1]
            take = min(left, q_len)
            for r in range(self.batch_size_):
                lost[r] += (take if counts is None else counts[r] if take == q_len
                            else int(pad[r, q_len - take:].sum()))
            if take == q_len:
                chunks.pop()
            else:
                keep = q_len - take
                chunks[-1] = [keep, None if counts is None else [int(x) for x in pad[:, :keep].sum(1)],
                              None if pad is None else pad[:, :keep]]
            left -= take
        if self.sliding_window is not None:
            for r, gone in enumerate(lost):
                start = self.packkv.window_start(self.rows[r])
                if gone and start:
                    raise ValueError(
                        f"packkv.hf: crop({n}) of a sliding-window layer whose window has moved "
                        f"(batch row {r}: window start {start}): the next queries would need "
                        "tokens before it, which were freed (transformers' own sliding layers "
                        "need activate_past_recording() for this; packkv keeps no past)")
        return remove, lost, chunks

    def _select_rows(self, src) -> None:
        """New batch row i becomes a copy of old row src[i]. Rows used once keep their packkv
        sequence; rows no longer used are removed; a row used again is forked (blocks shared).
        Needs a larger packkv cache (max_seqs) only when the batch grows: the rows then move
        into a new cache by export / import (a copy) and forks."""
        if not self.is_initialized:
            return
        if isinstance(src, torch.Tensor):
            src = src.tolist()
        src = [int(x) for x in src]
        b = self.batch_size_
        bad = [x for x in src if not 0 <= x < b]
        if bad or not src:
            raise ValueError(f"packkv.hf: batch indices {src} are not in [0, {b}) (or empty)")
        if src == list(range(b)):
            return
        cap = self.packkv.params.max_seqs
        if len(src) <= cap:
            used = set(src)
            for r in range(b):
                if r not in used:
                    self.packkv.remove_seq(self.rows[r])
            free = sorted(set(range(cap)) - {self.rows[r] for r in used})
            rows, seen = [], set()
            for r in src:
                if r in seen:
                    rows.append(free.pop(0))
                    self.packkv.fork(self.rows[r], rows[-1])
                else:
                    seen.add(r)
                    rows.append(self.rows[r])
            new = None
        else:
            new = self._new_cache(len(src))
            first: dict = {}
            rows = list(range(len(src)))
            for i, r in enumerate(src):
                if r in first:
                    new.fork(first[r], i)
                else:
                    new.import_seq(i, self.packkv.export_seq(self.rows[r]))
                    first[r] = i
        idx = torch.tensor(src)
        for c in self._chunks:
            if c[1] is not None:
                c[1] = [c[1][r] for r in src]
                c[2] = c[2].index_select(0, idx)
        if new is not None:
            self.packkv.close()
            self.packkv = new
        self.rows = rows
        self.batch_size_ = len(src)

    def __deepcopy__(self, memo):
        """A new layer holding copies of this layer's sequences (export / import into a new
        packkv cache of the same parameters: the same compressed bytes, window and
        residual tokens), so ``copy.deepcopy(cache)`` of a :class:`PackKVCache` reuses a
        prompt as with transformers' own caches. Not between an update() and its attention."""
        if self._pending:
            raise RuntimeError("packkv.hf: a layer cannot be copied between update() and its "
                               "attention call")
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name != "packkv":
                setattr(new, name, copy.deepcopy(value, memo))
        new.packkv = None
        if self.packkv is not None:
            cache = self._new_cache(self.packkv.params.max_seqs)
            try:
                for r in self.rows:
                    cache.import_seq(r, self.packkv.export_seq(r))
            except BaseException:
                cache.close()
                raise
            new.packkv = cache
        return new

    def offload(self):
        _unsupported("cache offloading", "moving a packkv cache between devices")

    def prefetch(self):
        _unsupported("cache offloading", "moving a packkv cache between devices")

    def close(self) -> None:
        if self.packkv is not None:
            self.packkv.close()


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------

def _layer_types(config) -> list:
    types = getattr(config, "layer_types", None)
    if types is None:
        kind = ("sliding_attention" if getattr(config, "sliding_window", None) is not None
                else "full_attention")
        types = [kind] * config.num_hidden_layers
    if getattr(config, "num_kv_shared_layers", 0):
        _unsupported("KV sharing between layers (num_kv_shared_layers)", "shared packkv caches")
    bad = sorted(set(types) - {"full_attention", "sliding_attention"})
    if bad:
        raise NotImplementedError(f"packkv.hf: layer types {bad} are not supported (only "
                                  "full_attention and sliding_attention)")
    return list(types)


#: The packkv.Cache keywords PackKVCache passes to every packkv layer.
_LAYER_PARAMS = ("rel_scale_k", "rel_scale_v", "bits_k", "bits_v", "repack", "scale_granularity",
                 "block_tokens", "residual_tokens", "sink_tokens", "zs_format", "k_transform",
                 "n_threads", "kv_dtype", "max_tokens_per_seq")
#: Those a PackKVLayer takes from the first forward.
_FORWARD_PARAMS = ("n_kv_heads", "head_dim", "max_seqs", "device")


def _check_params(text, params: dict) -> None:
    """Raises TypeError for a keyword PackKVCache does not take, else the library's error for
    a bad value: creates (and frees) a one-sequence CPU cache with the config's KV heads and
    head_dim (default: 1 and 64 where the config does not say) and kv_dtype float16 unless
    given."""
    for name in params:
        if name in _FORWARD_PARAMS:
            raise TypeError(f"packkv.hf.PackKVCache: {name!r} is not a parameter: it comes from "
                            "the first forward (the K/V tensors' shape and device)")
        if name not in _LAYER_PARAMS:
            raise TypeError(f"packkv.hf.PackKVCache got an unexpected keyword argument {name!r} "
                            f"(packkv parameters: {', '.join(_LAYER_PARAMS)})")
    heads = getattr(text, "num_attention_heads", None)
    n_kv = getattr(text, "num_key_value_heads", None) or heads or 1
    head_dim = getattr(text, "head_dim", None)
    if head_dim is None:
        hidden = getattr(text, "hidden_size", None)
        head_dim = hidden // heads if hidden and heads else 64
    check = dict(params)
    check.setdefault("kv_dtype", "float16")
    PackKV(n_kv_heads=int(n_kv), head_dim=int(head_dim), max_seqs=1, **check).close()


class PackKVCache(Cache):
    """A transformers Cache whose attention layers are packkv caches.

    Args:
        config: the model's config (``model.config``); its attention implementation must be
            the one :func:`register` registered (else ValueError).
        **params: packkv.Cache parameters for every layer: rel_scale_k,
            rel_scale_v, bits_k, bits_v, repack, scale_granularity, block_tokens,
            residual_tokens, sink_tokens, zs_format, k_transform, n_threads, kv_dtype (of the
            residual window; default float16 for a float32 model, else the model's dtype),
            max_tokens_per_seq. n_kv_heads, head_dim, max_seqs (the batch size) and device
            (that of the K/V tensors) come from the first forward. K centring
            (k_transform="center") needs kv_dtype float16: pass kv_dtype="float16"
            explicitly for a bfloat16 model.
        sliding_params: parameters of the sliding-window layers that differ from
            ``params`` (same keys), e.g. finer rates: such a layer holds at most the model's
            window of tokens, so its bytes are bounded while its error reaches every query
            (Gemma 3 270M, bench/RESULTS.md "Hugging Face end to end on the CPU").

    The parameters are checked here, not at the first forward: an unknown keyword (or one of
    those that come from the forward) raises TypeError naming it, and a bad value raises the
    library's error (e.g. packkv.InvalidArgument, packkv.NotSupported), found by creating a
    CPU packkv cache with the config's KV heads and head_dim (its kv_dtype: the given one,
    else float16; whether the model's own dtype fits is known only at the first forward).

    Sliding-window layers are PackKVLayers with the model's sliding window (packkv's
    sliding window, module docstring); where libpackkv's cache on the K/V's device has no
    sliding window, such a layer becomes transformers' DynamicSlidingWindowLayer at its
    first update, with a UserWarning (once per cache). One cache serves one
    batch (the batch size is fixed by the first forward) until :meth:`reset`. Not
    thread-safe (like transformers' caches). Use with ``model.generate(...,
    **cache_argument(cache, model))`` or ``model(..., **cache_argument(cache, model))``."""

    def __init__(self, config, sliding_params: dict | None = None, **params):
        impl = getattr(config, "_attn_implementation", None)
        if impl not in AttentionInterface._global_mapping or \
                AttentionInterface._global_mapping[impl] is not packkv_attention:
            raise ValueError(
                f"packkv.hf.PackKVCache: the model's attention implementation is {impl!r}; "
                "load it with attn_implementation=packkv.hf.register() (or call "
                "model.set_attn_implementation(packkv.hf.register()))")
        text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") \
            else config
        _check_params(text, params)
        if sliding_params is not None and not isinstance(sliding_params, dict):
            raise TypeError("packkv.hf.PackKVCache: sliding_params must be a dict of packkv "
                            f"parameters, got {type(sliding_params).__name__}")
        sliding = dict(params, **(sliding_params or {}))
        if sliding_params:
            try:
                _check_params(text, sliding)
            except TypeError as exc:
                raise TypeError(f"{exc} (in sliding_params)") from None
        kinds = _layer_types(text)
        layers = [PackKVLayer(**params) if kind == "full_attention" else
                  PackKVLayer(sliding_window=text.sliding_window, **sliding) for kind in kinds]
        self._warned_window = False
        super().__init__(layers=layers)

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        """transformers' Cache.update; first replaces a sliding-window PackKVLayer whose
        packkv cache cannot have a sliding window on this device (packkv.NotSupported from
        set_window) by transformers' DynamicSlidingWindowLayer, with a UserWarning."""
        layer = self.layers[layer_idx]
        if isinstance(layer, PackKVLayer) and layer.is_sliding and not layer.is_initialized:
            try:
                layer.lazy_initialization(key_states, value_states)
            except NotSupported as exc:
                self.layers[layer_idx] = DynamicSlidingWindowLayer(
                    sliding_window=layer.sliding_window)
                if not self._warned_window:
                    self._warned_window = True
                    warnings.warn(
                        "packkv.hf.PackKVCache: libpackkv has no sliding window for caches on "
                        f"{key_states.device} ({exc}); the sliding-window layers use "
                        "transformers' DynamicSlidingWindowLayer (uncompressed)", UserWarning,
                        stacklevel=2)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def crop(self, max_length: int) -> None:
        """transformers' Cache.crop, checked on every packkv layer first: a crop that one
        layer cannot do (a sliding window's freed tokens) raises ValueError before any layer
        changes."""
        for layer in self.packkv_layers:
            layer._crop_plan(max_length)
        super().crop(max_length)

    @property
    def packkv_layers(self) -> list:
        """The PackKVLayers (full-attention layers, and sliding-window layers that have a
        packkv cache)."""
        return [x for x in self.layers if isinstance(x, PackKVLayer)]

    def close(self) -> None:
        """Frees the packkv caches now (they are also freed when garbage-collected)."""
        for layer in self.packkv_layers:
            layer.close()


def cache_memory(cache: Cache) -> dict:
    """Bytes a transformers cache holds, by kind (any Cache; PackKVCache layers counted by
    packkv's stats):

    ``packkv_bytes``: all-in bytes of the packkv layers (compressed + residual window);
    ``packkv_fp16_bytes``: what those tokens take as fp16; ``tensor_bytes``: the K/V tensors
    of the other (transformers) layers, in their own dtype; ``total_bytes``: the sum of
    packkv_bytes and tensor_bytes; ``fp16_bytes``: every token held, K and V, as fp16."""
    packkv_bytes = fp16 = tensors = tensors_fp16 = 0
    for layer in getattr(cache, "layers", []):
        if isinstance(layer, PackKVLayer):
            st = layer.memory()
            packkv_bytes += st.get("compressed_bytes_used", 0) + st.get("residual_bytes", 0)
            fp16 += st.get("fp16_bytes", 0)
        else:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    tensors += t.numel() * t.element_size()
                    tensors_fp16 += t.numel() * 2
    return {"packkv_bytes": packkv_bytes, "packkv_fp16_bytes": fp16,
            "tensor_bytes": tensors, "total_bytes": packkv_bytes + tensors,
            "fp16_bytes": fp16 + tensors_fp16}

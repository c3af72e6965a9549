"""Consistency checks of the end-to-end harness (``ppl_eval.py --check``): layer replays of
real q/k/v through two backends that must agree to float rounding (exactness) and
whole-model runs of equivalent paths (see run_checks)."""

from __future__ import annotations

import argparse
import time

import numpy as np

import kv_backends as kb
import ppl_eval as pe


class _Recorder(kb.ExactBackend):
    """fp32 backend that also keeps each layer's post-RoPE queries (for layer replays)."""
    name = "recorder"

    def reset(self, cfg, max_tokens):
        super().reset(cfg, max_tokens)
        self.q = [[] for _ in range(cfg.n_layers)]

    def attend(self, layer, p0, q, k, v):
        self.q[layer].append(q.copy())
        return super().attend(layer, p0, q, k, v)


def replay(backend, cfg, qkv, chunk: int) -> list[np.ndarray]:
    """Feed recorded per-layer (q, k, v) [n, H, D] through `backend` in chunks cut at its
    flush points; returns each layer's attention output [n, Hq, D]."""
    import dataclasses
    n = qkv[0][0].shape[0]
    backend.reset(dataclasses.replace(cfg, n_layers=len(qkv)), n)
    bounds = kb.chunk_bounds(n, chunk, backend.flush_points(n))
    outs = [[] for _ in qkv]
    for a, b in zip(bounds[:-1], bounds[1:]):
        for li, (q, k, v) in enumerate(qkv):
            outs[li].append(backend.attend(li, a, q[a:b], k[a:b], v[a:b]))
    return [np.concatenate(o) for o in outs]


def run_checks(args) -> int:
    """Consistency checks on a short text (args.check_tokens tokens, the second half
    scored), printed with their numbers. Two kinds:

    * layer replays: real q/k/v of layers 0, 15 and 29 (recorded from the fp32 model) fed
      identically to two backends; their attention outputs must agree to fp32 rounding
      (max |a - b| / max |b| <= 1e-4). These are the exactness checks.
    * model runs: whole-model perplexities. A quantizer amplifies any last-bit difference
      of its input (a code flips at a rounding boundary; even the fp16 rounding of K/V), so
      two exactly-equivalent paths that round floats in a different order give NLLs that
      differ per token by up to ~1e-1 but perplexities that agree to ~1e-3 relative; that is
      the tolerance used (the sweep's differences of interest are >= 1%).
    """
    model = pe.load_model(args.model)
    cfg = pe.kv_cfg(model)
    n = args.check_tokens
    ids = pe.make_windows(model, [pe.DEFAULT_TEXTS[0]], 1, n)[0]["ids"]
    ok = True

    def check(name, good, msg):
        nonlocal ok
        ok &= bool(good)
        print(f"{'ok  ' if good else 'FAIL'} {name}: {msg}", flush=True)

    def layer_cmp(name, a, b, tol=1e-4):
        err = max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b))
        check(name, err <= tol, f"max rel diff {err:.2e} (tol {tol:g})")

    def ppl_cmp(name, a, b, tol):
        pa, pb = float(np.exp(np.mean(a))), float(np.exp(np.mean(b)))
        rel = abs(pa / pb - 1.0)
        check(name, rel <= tol, f"ppl {pa:.6f} vs {pb:.6f} (rel {rel:.1e}, tol {tol:g}; "
              f"max per-token |dNLL| {float(np.max(np.abs(np.asarray(a) - b))):.1e})")

    t = time.time()
    rec = _Recorder()
    exact = pe.score(model, ids, rec, n, args.chunk)[0]
    if hasattr(model, "new_cache"):            # SmolLM2: the unmodified forward pass
        plain = score_plain(model, ids, n, args.chunk)
        ppl_cmp("fp32 backend == plain smollm2.SmolLM2.forward", exact, plain, 1e-5)
    else:
        plain = exact
    fp16 = pe.score(model, ids, kb.Fp16Backend(), n, args.chunk)[0]
    ppl_cmp("fp16 backend ~= fp32 (fp16 rounding of K/V)", fp16, plain, 1e-2)

    layers = [0, cfg.n_layers // 2, cfg.n_layers - 1]
    qkv = [(np.concatenate(rec.q[li]), rec.k[li][:n].copy(), rec.v[li][:n].copy())
           for li in layers]
    ref16 = replay(kb.Fp16Backend(), cfg, qkv, args.chunk)
    nf = kb.PackKVBackend(attention="library", residual_tokens=n)
    layer_cmp("replay: packkv never flushing (library decode + lse merge) == fp16",
              replay(nf, cfg, qkv, args.chunk), ref16)
    nf.close()
    kw = dict(rel_scale_k=0.05, rel_scale_v=0.1, residual_tokens=64)
    lib, dec, tok = (kb.PackKVBackend(attention=a, **kw)
                     for a in ("library", "decompress", "library"))
    o_lib = replay(lib, cfg, qkv, args.chunk)
    layer_cmp("replay: packkv library attention == decompress + numpy attention",
              o_lib, replay(dec, cfg, qkv, args.chunk))
    layer_cmp("replay: packkv chunked (cut at flush points) == token by token",
              o_lib, replay(tok, cfg, qkv, 1))
    for be in (lib, dec, tok):
        be.close()
    sk = [kb.PackKVBackend(attention="decompress", emulated_sinks=4, **kw) for _ in range(2)]
    layer_cmp("replay: packkv emulated sinks chunked == token by token",
              replay(sk[0], cfg, qkv, args.chunk), replay(sk[1], cfg, qkv, 1))
    for be in sk:
        be.close()
    for mk in (lambda: kb.KiviBackend(2), lambda: kb.KiviBackend(3, sink_tokens=4),
               lambda: kb.Fp8Backend(np.abs(qkv[0][1]).max() * np.ones((3, 3)),
                                     np.abs(qkv[0][2]).max() * np.ones((3, 3)))):
        x, y = mk(), mk()
        layer_cmp(f"replay: {x.name} chunked == token by token",
                  replay(x, cfg, qkv, args.chunk), replay(y, cfg, qkv, 1))

    t1 = time.time()
    a = pe.score(model, ids, kb.PackKVBackend(attention="library", **kw), n, args.chunk)[0]
    t_lib = time.time() - t1
    t1 = time.time()
    b = pe.score(model, ids, kb.PackKVBackend(attention="decompress", **kw), n, args.chunk)[0]
    t_dec = time.time() - t1
    ppl_cmp(f"model: packkv library ({t_lib:.1f}s) ~= decompress ({t_dec:.1f}s)", a, b, 2e-3)
    c = pe.score(model, ids, kb.PackKVBackend(attention="library", **kw), n, 1)[0]
    ppl_cmp("model: packkv chunked ~= token by token (library)", a, c, 2e-3)
    print(f"checks {'passed' if ok else 'FAILED'} in {time.time() - t:.0f}s")
    return 0 if ok else 1


def score_plain(model, ids, n_tokens: int, chunk: int) -> np.ndarray:
    """NLL of every position with the unmodified smollm2.SmolLM2.forward (float32 cache)."""
    cache = model.new_cache(n_tokens)
    out = []
    for a in range(0, n_tokens, chunk):
        b = min(n_tokens, a + chunk)
        lp = pe.log_softmax(model.forward(ids[a:b], cache, want_logits="all"))
        tg = np.asarray(ids[a + 1:b + 1])
        out.append(-lp[np.arange(len(tg)), tg])
    return np.concatenate(out)

#!/usr/bin/env python3
"""End-to-end perplexity of SmolLM2-135M-Instruct with a compressed KV cache.

What
    The numpy SmolLM2-135M-Instruct of ``scripts/kv_dump/smollm2.py`` reads a real text
    (default: the first 4096 tokens of ``data/kjv_genesis.txt``, the KJV Book of Genesis,
    public domain, see data/README.md) with every layer's K/V held by a KV backend
    (``kv_backends.py``): fp16, fp8 e4m3, KIVI-b (b = 2..8), or libpackkv through its
    Python binding at several (r_K, r_V), scale granularities, residual windows and
    repacking modes. Every token is appended, and compressed, as the model reads it, and
    by default every next-token prediction is scored (``--score 4096``): perplexity =
    exp(mean NLL) of the predictions at positions 0..4095, each made from a cache that
    holds all earlier tokens in its compressed form plus its residual window. Why all of
    them rather than only a continuation after a 3072-token context (``--score 1024``):
    quantization moves single tokens' NLL by ~0.4-0.5 nats, so the paired standard error
    of the perplexity change is ~1.2-1.4% with 1024 scored tokens, too coarse for a +1%
    threshold, and ~0.1-1% with 4096; the compression error is present at every position
    past the first window (measured per quarter of the text).

    Per row: perplexity, its change against fp16 (with its paired standard error), the mean
    KL(p_fp16 || p_row) of the next-token distributions (a low-noise cross-check), all-in
    bytes per K/V element (final state, all 30 layers: PackKV compressed_bytes_used +
    residual_bytes from the cache stats; KIVI/fp8 by examples/eval/baselines.cpp's
    formulas; fp16 2), the wall time. Then the turning points: for each curve (KIVI-b for
    b = 2..8, as packkv-eval --sweep; each PackKV scale granularity / window / repacking
    mode over its (r_K, r_V) grid), a least-squares monotone (isotonic) fit of the
    perplexity change against bytes, and the bytes per element at which the fit reaches
    +1% and +5%, interpolated linearly in log(bytes); PackKV's size advantage over KIVI
    there (bytes_KIVI / bytes_PackKV at the same perplexity change); the same on the KL
    curves at KL = log(1.01), log(1.05).

Exactness and speed (2 CPU cores)
    Chunks of at most 64 tokens, cut at every flush point of the backend, give exactly
    token-by-token decode semantics (kv_backends.py docstring); ``--check`` verifies
    that, that the fp32 backend equals the plain numpy model, that a PackKV cache that
    never flushes equals the fp16 row through the library's own attention (decode + lse
    merge), and that library attention and decompress+numpy attention agree. The sweep uses
    the decompress path (``--attention``), one BLAS thread per process, ``--jobs`` worker
    processes.

Usage::

    OPENBLAS_NUM_THREADS=1 python3 scripts/e2e/ppl_eval.py --jobs 2 \\
        --json bench/e2e_ppl.json --plot bench/e2e_ppl.png --markdown build/e2e_ppl.md
    python3 scripts/e2e/ppl_eval.py --check            # consistency checks (a few minutes)
    python3 scripts/e2e/ppl_eval.py --rows fp16,kivi-4,packkv:rk=0.05:rv=0.1   # chosen rows
    python3 scripts/e2e/ppl_eval.py --from-json bench/e2e_ppl.json --plot build/e2e_ppl.png  # re-plot

Needs the packkv binding on PYTHONPATH (``pip install ./bindings/python``, or a CMake build's
``<build>/bindings/python/pkg``) for PackKV rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: small GEMMs, shared cores

import argparse
import json
import math
import multiprocessing as mp
import subprocess
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import kv_backends as kb  # noqa: E402
import smollm2  # noqa: E402  (path set by kv_backends)

REPO = os.path.dirname(os.path.dirname(_HERE))
DEFAULT_TEXT = os.path.join(REPO, "data", "kjv_genesis.txt")

# The default sweep. PackKV rows: "packkv:key=value:..." with keys rk, rv (relative scales),
# gran (tok | head), res (residual tokens), repack (median | greedy | none), attn (library |
# decompress). Every PackKV row also measures the bytes of the two other repacking modes.
PACKKV_GRID = {
    # (scale granularity, residual window): [(r_K, r_V), ...]
    ("tok", 128): [(0.01, 0.02), (0.02, 0.04), (0.035, 0.07), (0.05, 0.1), (0.07, 0.14),
                   (0.1, 0.2), (0.14, 0.28), (0.025, 0.1), (0.05, 0.2)],
    ("head", 128): [(0.02, 0.04), (0.05, 0.1), (0.1, 0.2)],
    ("tok", 32): [(0.02, 0.04), (0.035, 0.07), (0.05, 0.1), (0.1, 0.2)],
    ("tok", 0): [(0.02, 0.04), (0.035, 0.07), (0.05, 0.1)],
}


def default_rows() -> list[str]:
    """fp16, fp8, KIVI-2..8 and the PackKV grid (each PackKV run also measures the bytes of
    the two other repacking modes)."""
    rows = ["fp16", "fp8"] + [f"kivi-{b}" for b in range(2, 9)]
    for (gran, res), pairs in PACKKV_GRID.items():
        rows += [f"packkv:rk={rk}:rv={rv}:gran={gran}:res={res}" for rk, rv in pairs]
    return rows


# --------------------------------------------------------------------------------------------
# Row specs
# --------------------------------------------------------------------------------------------

def parse_row(spec: str, attention: str) -> dict:
    """'fp16' | 'fp32' | 'fp8' | 'kivi-B' | 'packkv:rk=..:rv=..[:gran=tok|head][:res=N]
    [:repack=median|greedy|none][:attn=library|decompress]' -> a row description."""
    if spec in ("fp16", "fp32", "fp8", "plain"):
        return {"spec": spec, "method": spec}
    if spec.startswith("kivi-"):
        return {"spec": spec, "method": "kivi", "bits": int(spec[5:])}
    if spec.startswith("packkv"):
        kv = dict(p.split("=", 1) for p in spec.split(":")[1:])
        row = {"spec": spec, "method": "packkv",
               "rk": float(kv.get("rk", 0.1)), "rv": float(kv.get("rv", 0.2)),
               "gran": kv.get("gran", "tok"), "res": int(kv.get("res", 128)),
               "repack": kv.get("repack", "median"), "attn": kv.get("attn", attention),
               "block": int(kv.get("block", 64))}
        unknown = set(kv) - {"rk", "rv", "gran", "res", "repack", "attn", "block"}
        if unknown or row["gran"] not in ("tok", "head"):
            raise SystemExit(f"bad row spec {spec!r}")
        return row
    raise SystemExit(f"bad row spec {spec!r}")


def make_backend(row: dict, calib: dict | None):
    m = row["method"]
    if m == "fp32":
        return kb.ExactBackend()
    if m == "fp16":
        return kb.Fp16Backend()
    if m == "fp8":
        if calib is None:
            raise SystemExit("fp8 needs the fp16 row's calibration (run fp16 first)")
        return kb.Fp8Backend(calib["amax_k"], calib["amax_v"])
    if m == "kivi":
        return kb.KiviBackend(row["bits"])
    gran = {"tok": "per_token", "head": "per_token_head"}[row["gran"]]
    shadows = [r for r in ("median", "greedy", "none") if r != row["repack"]]
    return kb.PackKVBackend(attention=row["attn"], shadow_repacks=shadows, name=row["spec"],
                            rel_scale_k=row["rk"], rel_scale_v=row["rv"],
                            scale_granularity=gran, residual_tokens=row["res"],
                            block_tokens=row["block"], repack=row["repack"])


# --------------------------------------------------------------------------------------------
# Running one row
# --------------------------------------------------------------------------------------------

def nll_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-position NLL in float64."""
    lg = logits.astype(np.float64)
    m = lg.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(lg - m).sum(axis=-1)) + m[:, 0]
    return lse - lg[np.arange(len(targets)), targets]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    lg = logits.astype(np.float64)
    m = lg.max(axis=-1, keepdims=True)
    return lg - (np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)) + m)


def score(model, ids, backend, n_tokens: int, score_from: int, chunk: int,
          ref_logp=None, save_logp=None):
    """Read ids[:n_tokens] through `backend`; NLL of ids[p+1] at positions
    score_from..n_tokens-1. With ref_logp ([n_scored, vocab] log-probabilities of the
    reference row) also the per-position KL(p_ref || p) in nats; save_logp (a writable
    [n_scored, vocab] array) receives this row's log-probabilities. Returns (nll, kl or
    None)."""
    backend.reset(model.cfg, n_tokens)
    bounds = kb.chunk_bounds(n_tokens, chunk, backend.flush_points(n_tokens), [score_from])
    nll, kl = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        want = b > score_from
        lg = kb.forward_chunk(model, ids[a:b], a, backend, want_logits=want)
        if want:
            lo = max(a, score_from)
            lp = log_softmax(lg[lo - a:])
            tg = np.asarray(ids[lo + 1:b + 1])
            nll.append(-lp[np.arange(len(tg)), tg])
            if save_logp is not None:
                save_logp[lo - score_from:b - score_from] = lp
            if ref_logp is not None:
                rp = np.asarray(ref_logp[lo - score_from:b - score_from], dtype=np.float64)
                kl.append((np.exp(rp) * (rp - lp)).sum(axis=-1))
    return np.concatenate(nll), (np.concatenate(kl) if kl else None)


def score_plain(model, ids, n_tokens: int, score_from: int, chunk: int) -> np.ndarray:
    """The same with the unmodified smollm2.SmolLM2.forward (float32 cache)."""
    cache = model.new_cache(n_tokens)
    out = []
    for a in range(0, n_tokens, chunk):
        b = min(n_tokens, a + chunk)
        lg = model.forward(ids[a:b], cache, want_logits="all" if b > score_from else "none")
        if b > score_from:
            lo = max(a, score_from)
            out.append(nll_of(lg[lo - a:], np.asarray(ids[lo + 1:b + 1])))
    return np.concatenate(out)


def run_row(model, ids, row: dict, args, calib=None) -> dict:
    """Score one row; returns its results (ppl, bytes, per-token NLL, ...)."""
    t0 = time.time()
    if row["method"] == "plain":          # the unmodified smollm2 forward, fp32 cache
        nll = score_plain(model, ids, args.tokens, args.tokens - args.score, args.chunk)
        return dict(row, ppl=float(np.exp(nll.mean())), nll_mean=float(nll.mean()),
                    bytes_per_element=4.0, time_s=time.time() - t0)
    backend = make_backend(row, calib)
    ref_logp = save = None
    if getattr(args, "logp_path", None):
        shape = (args.score, model.cfg.vocab_size)
        if row["method"] == "fp16":
            save = np.lib.format.open_memmap(args.logp_path, "w+", np.float32, shape)
        else:
            ref_logp = np.load(args.logp_path, mmap_mode="r")
    nll, kl = score(model, ids, backend, args.tokens, args.tokens - args.score, args.chunk,
                    ref_logp=ref_logp, save_logp=save)
    if save is not None:
        save.flush()
        del save
    rep = backend.bytes()
    res = dict(row)
    if kl is not None:
        res["kl_mean"] = float(kl.mean())
    res.update(ppl=float(np.exp(nll.mean())), nll_mean=float(nll.mean()),
               all_in=int(rep.all_in), elements=int(rep.elements),
               bytes_per_element=rep.bytes_per_element, nll=nll.tolist())
    if isinstance(backend, kb.PackKVBackend):
        p = backend.params
        res["bits_k"], res["bits_v"] = int(p.bits_k), int(p.bits_v)
        res["stats"] = rep.detail["stats"]
        res["repack_bytes"] = rep.detail["repack"]
        backend.check_shadows()
    if isinstance(backend, kb.Fp16Backend):
        res["calib"] = {"amax_k": backend.amax_k.tolist(), "amax_v": backend.amax_v.tolist()}
    backend.close()
    res["time_s"] = time.time() - t0
    return res


_G: dict = {}


def _worker_run(job):
    row, calib = job
    try:
        return run_row(_G["model"], _G["ids"], row, _G["args"], calib)
    except Exception as e:  # report, keep the sweep going
        return dict(row, error=f"{type(e).__name__}: {e}")


def load_ids(model, args) -> list[int]:
    with open(args.text, encoding="utf-8") as f:
        ids = model.tokenizer.encode(f.read()).ids
    if len(ids) < args.tokens + 1:
        raise SystemExit(f"{args.text}: {len(ids)} tokens, need {args.tokens + 1}")
    return ids[:args.tokens + 1]


# --------------------------------------------------------------------------------------------
# Curves and turning points
# --------------------------------------------------------------------------------------------

def frontier(points):
    """Pareto frontier of (bytes, delta, ...) points, bytes ascending: a point is kept when
    every point with fewer (or equal) bytes has a larger perplexity change (optimistic: it
    picks the luckiest configurations)."""
    out, best = [], math.inf
    for p in sorted(points, key=lambda p: (p[0], p[1])):
        if p[1] < best:
            out.append(p)
            best = p[1]
    return out


def isotonic_fit(points):
    """Least-squares fit of delta as a non-increasing function of bytes (pool adjacent
    violators), over (bytes, delta, ...) points; returns [(bytes, fitted delta)] with bytes
    ascending. Used for the turning points: perplexity changes are noisy (see the +-SE
    column), and a monotone fit uses every point instead of the luckiest ones."""
    pts = sorted(points, key=lambda p: p[0])
    blocks = []                                   # [sum of -delta, count]
    for p in pts:
        blocks.append([-p[1], 1, [p[0]]])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, c2, x2 = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][2] += x2
    out = []
    for s_, c, xs in blocks:
        out += [(x, -s_ / c) for x in xs]
    return out


def turning_point(points, thr: float):
    """Bytes per element at which a curve reaches perplexity change `thr` (percent).

    points: (bytes_per_element, delta_pct, label). On the isotonic fit (bytes ascending,
    delta non-increasing) find the adjacent pair with delta(b1) > thr >= delta(b2) and
    interpolate log(bytes) linearly in delta. Returns (bytes, kind) with kind 'interp',
    'below' (every point is within thr: the turning point is at or below the smallest
    bytes measured, returned as that upper bound) or 'none' (no point within thr).
    """
    f = isotonic_fit(points)
    if not f:
        return None, "none"
    if f[0][1] <= thr:
        return f[0][0], "below"
    for (b1, d1), (b2, d2) in zip(f[:-1], f[1:]):
        if d1 > thr >= d2:
            t = (thr - d1) / (d2 - d1)
            return math.exp(math.log(b1) + t * (math.log(b2) - math.log(b1))), "interp"
    return None, "none"


def family_of(r: dict) -> str:
    """Curve a row belongs to (PackKV: scale granularity, residual, repacking)."""
    if r["method"] == "packkv":
        g = "per-token" if r["gran"] == "tok" else "per-token-head"
        return f"packkv {g} res{r['res']}"
    if r["method"] == "kivi":
        return "kivi"
    return r["method"]


def curves(results: list[dict], key: str = "delta_pct") -> dict:
    """{curve name: [(bytes_per_element, results[key], spec)]}. Each PackKV run contributes
    one point per repacking mode (same perplexity, that mode's bytes)."""
    out: dict = {}
    for r in results:
        if "error" in r or r["method"] in ("fp32",) or key not in r:
            continue
        fam = family_of(r)
        if r["method"] == "packkv":
            for mode, all_in in r["repack_bytes"].items():
                out.setdefault(f"{fam} {mode}", []).append(
                    (all_in / r["elements"], r[key], r["spec"]))
        else:
            out.setdefault(fam, []).append((r["bytes_per_element"], r[key], r["spec"]))
    return out


# KL thresholds equivalent to +1% / +5% perplexity: an NLL increase of log(1.01), log(1.05).
KL_THRESHOLDS = {"1.0": math.log(1.01), "5.0": math.log(1.05)}


def analyse(results: list[dict], ref: dict) -> dict:
    """Perplexity change (and its paired standard error) of every row, the curves, their
    turning points at +1% / +5%, and the summary against the goals."""
    ref_nll = np.asarray(ref["nll"]) if "nll" in ref else None
    for r in results:
        if "error" in r:
            continue
        r["delta_pct"] = 100.0 * (r["ppl"] / ref["ppl"] - 1.0)
        if ref_nll is not None and "nll" in r:
            d = np.asarray(r["nll"]) - ref_nll
            r["delta_se_pct"] = 100.0 * float(d.std(ddof=1) / math.sqrt(len(d))) * r["ppl"] / ref["ppl"]
    cv = curves(results)
    tp = {name: {str(t): turning_point(pts, t) for t in (1.0, 5.0)} for name, pts in cv.items()}
    for r in results:
        if r.get("method") == "fp16":
            r["kl_mean"] = 0.0
    cvk = curves(results, "kl_mean")
    tpk = {name: {t: turning_point(pts, thr) for t, thr in KL_THRESHOLDS.items()}
           for name, pts in cvk.items()}
    summary, summary_kl = {}, {}
    for t in ("1.0", "5.0"):
        summary[t] = _summary(tp, t)
        summary_kl[t] = _summary(tpk, t)
    return {"curves": cv, "turning_points": tp, "summary": summary,
            "turning_points_kl": tpk, "summary_kl": summary_kl}


def _summary(tp: dict, t: str) -> dict:
    """KIVI's and the best PackKV curve's turning point at threshold t, and the ratios."""
    if True:
        kivi = tp.get("kivi", {}).get(t, (None, "none"))
        best = None
        for name, v in tp.items():
            if name.startswith("packkv") and v[t][0] is not None:
                if best is None or v[t][0] < best[1]:
                    best = (name, v[t][0], v[t][1])
        row = {"kivi_bytes": kivi[0], "kivi_kind": kivi[1]}
        if best:
            row.update(packkv_curve=best[0], packkv_bytes=best[1], packkv_kind=best[2],
                       vs_fp16=2.0 / best[1],
                       vs_kivi=(kivi[0] / best[1]) if kivi[0] else None)
        return row


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------

def fmt_tp(v):
    b, kind = v
    if b is None:
        return "n/a"
    return f"<= {b:.3f}" if kind == "below" else f"{b:.3f}"


def _pct(r):
    se = r.get("delta_se_pct")
    return f"{r['delta_pct']:+.2f}%" + (f" ± {se:.2f}" if se is not None else "")


def markdown(report: dict) -> str:
    res, an, meta = report["results"], report["analysis"], report["meta"]
    ctx = meta["tokens"] - meta["score"]
    lines = [
        f"Text: `{os.path.relpath(meta['text'], REPO)}` (KJV Genesis, public domain; "
        f"data/README.md), its first {meta['tokens'] + 1} tokens. The model reads "
        f"{meta['tokens']} tokens in chunks of <= {meta['chunk']} cut at the cache's flush "
        f"points (token-by-token decode semantics: the query at position p attends over the "
        f"cache of tokens < p, as stored, plus itself in fp16); every K/V goes through the "
        f"cache as it is read; perplexity = exp(mean NLL) of the {meta['score']} next-token "
        f"predictions at positions {ctx}..{meta['tokens'] - 1}. Model: {meta['model']}, numpy "
        f"fp32. fp16 cache ppl {meta['ref_ppl']:.4f}; plain numpy model (unmodified "
        f"smollm2.py forward, fp32 cache): {meta.get('plain_ppl') or float('nan'):.4f}. "
        f"PackKV attention path: {meta['attention']}. Commit {meta['commit']}, {meta['date']}, "
        f"2 shared CPU cores, sweep wall time {meta['wall_s'] / 60:.1f} min.",
        "",
        "Δppl: change against the fp16 cache, ± its standard error over the scored tokens "
        "(paired per-token NLL differences; tokens are correlated, so the true noise is "
        "larger). KL: mean KL(p_fp16 || p_row) of the next-token distributions, nats/token "
        "(a low-noise fidelity measure). B/elem: all-in bytes per K/V element, final state "
        "(4096 tokens x 30 layers x 3 KV heads x 64 x 2); PackKV columns for the three "
        "repacking modes (same values, same perplexity: repacking is lossless).",
        "",
        "| row | r_K | r_V | bits K/V | scales | window | ppl | Δppl | KL | B/elem median "
        "| greedy | none | × fp16 (best) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"fp32": 0, "fp16": 1, "fp8": 2, "kivi": 3, "packkv": 4}
    for r in sorted([r for r in res if "error" not in r],
                    key=lambda r: (order[r["method"]], r.get("gran", ""), r.get("res", 0),
                                   -r["bytes_per_element"])):
        kl = f"{r['kl_mean']:.4f}" if "kl_mean" in r else ""
        if r["method"] == "packkv":
            rb, e = r["repack_bytes"], r["elements"]
            best = min(rb.values()) / e
            lines.append(
                f"| packkv | {r['rk']:g} | {r['rv']:g} | {r['bits_k']}/{r['bits_v']} | "
                f"{'token' if r['gran'] == 'tok' else 'token+head'} | {r['res']} | "
                f"{r['ppl']:.4f} | {_pct(r)} | {kl} | {rb['median'] / e:.4f} | "
                f"{rb['greedy'] / e:.4f} | {rb['none'] / e:.4f} | {2.0 / best:.2f} |")
        else:
            win = {"kivi": "128", "fp8": "0"}.get(r["method"], "all")
            lines.append(f"| {r['spec']} | | | | | {win} | {r['ppl']:.4f} | {_pct(r)} | {kl} | "
                         f"{r['bytes_per_element']:.4f} | | | {2.0 / r['bytes_per_element']:.2f} |")
    lines += ["", "Turning points: bytes per element at which each curve reaches +1% / +5% "
              "perplexity, on a least-squares monotone (isotonic) fit of Δppl against bytes, "
              "interpolated linearly in log(bytes); '<=' = already within at the smallest size "
              "measured. KIVI's curve is KIVI-b for b = 2..8 (as packkv-eval --sweep); each "
              "PackKV curve is one scale granularity / window / repacking mode over its "
              "(r_K, r_V) grid.", "",
              "| curve | B/elem at +1% | × fp16 | B/elem at +5% | × fp16 |",
              "|---|---|---|---|---|"]
    lines += _turning_point_rows(an["turning_points"])
    lines += ["", "Summary against the goals (perplexity turning points above; second table: "
              "the same on the KL curves, a low-noise cross-check, with KL thresholds "
              "log(1.01) and log(1.05) nats/token, the NLL increase of +1% / +5% perplexity):", ""]
    lines += _summary_table(an["summary"], "Δppl")
    lines += [""] + _summary_table(an["summary_kl"], "KL-equivalent Δppl")
    lines += ["", "KL turning points per curve (B/elem at KL = log(1.01) / log(1.05)):", "",
              "| curve | B/elem at KL 0.00995 | × fp16 | B/elem at KL 0.0488 | × fp16 |",
              "|---|---|---|---|---|"]
    lines += _turning_point_rows(an["turning_points_kl"])
    return "\n".join(lines)


def _turning_point_rows(turning_points: dict) -> list[str]:
    """Markdown rows '| curve | B/elem at +1% | x fp16 | B/elem at +5% | x fp16 |'."""
    rows = []
    for name, tp in turning_points.items():
        cells = []
        for t in ("1.0", "5.0"):
            b, kind = tp[t]
            cells += [fmt_tp(tp[t]), "n/a" if b is None else
                      (f">= {2.0 / b:.2f}" if kind == "below" else f"{2.0 / b:.2f}")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _summary_table(summary: dict, label: str) -> list[str]:
    lines = [f"| {label} | KIVI B/elem | best PackKV curve | PackKV B/elem | PackKV × fp16 "
             "(goal >= 8 at 1%) | KIVI / PackKV (goal >= 2.5) |", "|---|---|---|---|---|---|"]
    for t, sm in summary.items():
        kb_ = "n/a" if sm["kivi_bytes"] is None else f"{sm['kivi_bytes']:.3f}"
        if "packkv_bytes" in sm:
            vk = "n/a" if sm["vs_kivi"] is None else f"{sm['vs_kivi']:.2f}"
            lines.append(f"| +{float(t):g}% | {kb_} | {sm['packkv_curve']} | "
                         f"{sm['packkv_bytes']:.3f} | {sm['vs_fp16']:.2f} | {vk} |")
        else:
            lines.append(f"| +{float(t):g}% | {kb_} | n/a | n/a | n/a | n/a |")
    return lines


def plot(report: dict, path: str) -> None:
    """Δppl against all-in bytes per element: every row as a point (± SE), each curve's
    isotonic fit as a line, the +1% / +5% levels dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = [r for r in report["results"] if "error" not in r and r["method"] != "fp32"]
    se = {r["spec"]: r.get("delta_se_pct", 0.0) for r in res}
    cv = report["analysis"]["curves"]
    fig, ax = plt.subplots(figsize=(9, 5.8))
    fixed = {"kivi": dict(color="tab:red", marker="s"),
             "fp8": dict(color="tab:purple", marker="D"),
             "fp16": dict(color="black", marker="*", markersize=12)}
    colors = iter(["navy", "tab:green", "tab:orange", "tab:brown", "tab:pink", "tab:gray"])
    default_family = "packkv per-token res128"
    for name, pts in cv.items():
        # PackKV: every family with median repacking (points + fit); the other repacking
        # modes only for the default family, as dashed fits (same ppl, their own bytes).
        other_mode = name.startswith("packkv") and not name.endswith("median")
        if other_mode and not name.startswith(default_family):
            continue
        if other_mode:
            st = dict(color="tab:blue" if name.endswith("greedy") else "tab:cyan", marker="")
        else:
            st = dict(fixed.get(name) or dict(color=next(colors, "tab:gray"), marker="o"))
        pts = sorted(pts)
        if not other_mode:
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[se.get(p[2], 0) for p in pts], fmt=st["marker"],
                        color=st["color"], ms=st.get("markersize", 4), alpha=0.7,
                        elinewidth=0.6, capsize=0)
        f = isotonic_fit(pts)
        if len(f) > 1:
            ax.plot([p[0] for p in f], [p[1] for p in f], color=st["color"],
                    lw=1.0 if other_mode else 1.5, ls="--" if other_mode else "-",
                    label=name + (" (b = 2..8)" if name == "kivi" else "") +
                    (" (monotone fit)" if not other_mode and name.startswith("packkv") else ""))
        else:
            ax.plot([], [], st["marker"], color=st["color"], label=name)
        if name == "kivi":
            for b, d, spec in pts:
                ax.annotate(spec.replace("kivi-", "b"), (b, d), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.axhline(1.0, color="gray", ls="--", lw=0.8)
    ax.axhline(5.0, color="gray", ls=":", lw=0.8)
    ax.axvline(0.25, color="tab:green", ls="-.", lw=0.8)
    ax.text(0.25, 0.98, " 8x smaller than fp16", fontsize=7, color="tab:green",
            transform=ax.get_xaxis_transform(), va="top")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("all-in bytes per K/V element (fp16 = 2)")
    ax.set_ylabel("perplexity change vs fp16 cache (%), ± SE")
    m = report["meta"]
    ax.set_title(f"SmolLM2-135M on KJV Genesis, {m['tokens']} tokens through the cache, "
                 f"{m['score']} scored (fp16 ppl {m['ref_ppl']:.3f})", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

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
    model = smollm2.SmolLM2()
    cfg = model.cfg
    n = args.check_tokens
    sub = argparse.Namespace(**vars(args))
    sub.tokens, sub.score = n, n // 2
    ids = load_ids(model, sub)
    sf = n - sub.score
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
    plain = score_plain(model, ids, n, sf, args.chunk)
    rec = _Recorder()
    exact = score(model, ids, rec, n, sf, args.chunk)[0]
    ppl_cmp("fp32 backend == plain smollm2.SmolLM2.forward", exact, plain, 1e-5)
    fp16 = score(model, ids, kb.Fp16Backend(), n, sf, args.chunk)[0]
    ppl_cmp("fp16 backend ~= plain (fp16 rounding of K/V)", fp16, plain, 1e-2)

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
    for mk in (lambda: kb.KiviBackend(2),
               lambda: kb.Fp8Backend(np.abs(qkv[0][1]).max() * np.ones((3, 3)),
                                     np.abs(qkv[0][2]).max() * np.ones((3, 3)))):
        x, y = mk(), mk()
        layer_cmp(f"replay: {x.name} chunked == token by token",
                  replay(x, cfg, qkv, args.chunk), replay(y, cfg, qkv, 1))

    t1 = time.time()
    a = score(model, ids, kb.PackKVBackend(attention="library", **kw), n, sf, args.chunk)[0]
    t_lib = time.time() - t1
    t1 = time.time()
    b = score(model, ids, kb.PackKVBackend(attention="decompress", **kw), n, sf, args.chunk)[0]
    t_dec = time.time() - t1
    ppl_cmp(f"model: packkv library ({t_lib:.1f}s) ~= decompress ({t_dec:.1f}s)", a, b, 2e-3)
    c = score(model, ids, kb.PackKVBackend(attention="library", **kw), n, sf, 1)[0]
    ppl_cmp("model: packkv chunked ~= token by token (library)", a, c, 2e-3)
    print(f"checks {'passed' if ok else 'FAILED'} in {time.time() - t:.0f}s")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                       text=True).strip()
    except Exception:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens read (default 4096)")
    ap.add_argument("--score", type=int, default=4096,
                    help="scored next-token predictions, the last ones (default 4096: all)")
    ap.add_argument("--chunk", type=int, default=64, help="max chunk (default 64)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated row specs (default: the full sweep; see source)")
    ap.add_argument("--attention", choices=["library", "decompress"], default="decompress",
                    help="PackKV attention path for rows without attn= (default decompress)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain-model reference")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--merge", default=None, help="JSON of an earlier run whose rows are kept "
                    "unless re-run (to extend a sweep)")
    ap.add_argument("--plot", default=None, help="write the PNG plot here")
    ap.add_argument("--markdown", default=None, help="write the markdown table here")
    ap.add_argument("--from-json", default=None,
                    help="re-make the markdown / plot of an earlier --json run, no model runs")
    ap.add_argument("--check", action="store_true", help="run the consistency checks only")
    ap.add_argument("--check-tokens", type=int, default=448)
    args = ap.parse_args(argv)
    args.score = min(args.score, args.tokens)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        ref = next(r for r in report["results"] if r["method"] == "fp16")
        report["analysis"] = analyse(report["results"], ref)
        md = markdown(report)
        print(md)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(md + "\n")
        if args.plot:
            plot(report, args.plot)
        return 0
    if args.check:
        return run_checks(args)

    specs = args.rows.split(",") if args.rows else default_rows()
    rows = [parse_row(s, args.attention) for s in specs]
    old = {}
    if args.merge:
        with open(args.merge) as f:
            prev = json.load(f)
        old = {r["spec"]: r for r in prev["results"]}
    t0 = time.time()
    import tempfile
    tmpdir = tempfile.mkdtemp(prefix="packkv_e2e_")
    args.logp_path = os.path.join(tmpdir, "fp16_logp.npy")   # the fp16 row's log-probs (KL)
    model = smollm2.SmolLM2()
    ids = load_ids(model, args)
    print(f"[{len(ids) - 1} tokens + 1 target from {args.text}; model loaded in "
          f"{time.time() - t0:.1f}s; packkv rows: attention={args.attention}]", flush=True)
    results = []
    # fp16 first (reference and fp8 calibration), from an earlier run if merged.
    if "fp16" in old and "fp16" not in specs:
        ref = old["fp16"]
        args.logp_path = None                # no reference log-probs: no KL for new rows
    else:
        ref = run_row(model, ids, parse_row("fp16", args.attention), args)
        print(f"fp16: ppl {ref['ppl']:.4f} ({ref['time_s']:.0f}s)", flush=True)
    results.append(ref)
    if not args.no_plain and "plain" not in specs:
        rows.append(parse_row("plain", args.attention))
    todo = [r for r in rows if r["spec"] != "fp16"]
    calib = ref["calib"]
    jobs = [(r, calib) for r in todo]
    if args.jobs > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork")           # workers inherit the loaded model
        _G.update(model=model, ids=ids, args=args)
        with ctx.Pool(args.jobs) as pool:
            for res in pool.imap_unordered(_worker_run, jobs):
                results.append(res)
                _progress(res, ref, len(results), len(jobs) + 1)
    else:
        for job in jobs:
            res = _worker_run_local(model, ids, job, args)
            results.append(res)
            _progress(res, ref, len(results), len(jobs) + 1)
    done = {r["spec"] for r in results}
    results += [r for s, r in old.items() if s not in done]
    plain_rows = [r for r in results if r["method"] == "plain" and "error" not in r]
    meta_plain = plain_rows[0]["ppl"] if plain_rows else None
    if meta_plain is None and args.merge:
        meta_plain = prev["meta"].get("plain_ppl")
    results = [r for r in results if r["method"] != "plain"]
    meta = {"text": os.path.abspath(args.text), "tokens": args.tokens, "score": args.score,
            "chunk": args.chunk, "attention": args.attention, "ref_ppl": ref["ppl"],
            "plain_ppl": meta_plain, "commit": git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.time() - t0, "model": smollm2.MODEL_NAME}
    report = {"meta": meta, "results": results}
    report["analysis"] = analyse(results, ref)
    md = markdown(report)
    print(md)
    if args.json:
        slim = json.loads(json.dumps(report, default=float))
        for r in slim["results"]:
            r.pop("nll", None)
        with open(args.json, "w") as f:
            json.dump(slim, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    if args.plot:
        plot(report, args.plot)
    print(f"[total {time.time() - t0:.0f}s]")
    import shutil
    shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


def _worker_run_local(model, ids, job, args):
    row, calib = job
    try:
        return run_row(model, ids, row, args, calib)
    except Exception as e:
        return dict(row, error=f"{type(e).__name__}: {e}")


def _progress(res, ref, i, n):
    if "error" in res:
        print(f"[{i}/{n}] {res['spec']}: ERROR {res['error']}", flush=True)
        return
    print(f"[{i}/{n}] {res['spec']}: ppl {res['ppl']:.4f} ({100 * (res['ppl'] / ref['ppl'] - 1):+.2f}%), "
          f"{res['bytes_per_element']:.4f} B/elem, {res['time_s']:.0f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""End-to-end fidelity of a small LLM with a compressed KV cache: KL divergence from the fp16
cache (primary) and perplexity.

What
    A numpy model (SmolLM2-135M-Instruct, ``scripts/kv_dump/smollm2.py``, default; or Gemma 3
    270M, ``scripts/kv_dump/gemma3.py``, ``--model gemma3``) reads real texts with every
    layer's K/V held by a KV backend (``kv_backends.py``): fp16, fp8 e4m3, KIVI-b (b = 2..8,
    optionally with the first k tokens kept in fp16), or libpackkv through its Python
    binding. For Gemma 3 only its full-attention layers (5, 11, 17) go through the backend;
    its 15 sliding-window layers keep an fp16 window of 512 tokens in every row.

    Texts and windows: ``--texts`` (default ``data/kjv_genesis.txt`` (KJV Genesis, prose) and
    ``data/go_strings.txt`` (Go's package strings, code); both described in data/README.md),
    ``--windows`` consecutive windows of ``--tokens`` tokens from each (default 2 x 4096: four
    windows, 16384 scored tokens). Each window is a fresh sequence (Gemma: BOS first); every
    K/V goes through the cache as the model reads it and every next-token prediction of the
    window is scored.

    Per row: the primary metric, **mean KL(p_fp16 || p_row)** of the next-token distributions
    over all scored tokens (paired against the fp16 cache's run of the same windows, nats per
    token; ``kld`` in the JSON), per text beside it; perplexity exp(mean NLL) and its change
    against fp16 (``ppl``, ``delta_pct`` with the paired standard error); all-in bytes per K/V
    element of the final states (``bytes_per_element``: PackKV compressed_bytes_used +
    residual_bytes (+ emulated sink bytes) from the cache stats, summed over layers and
    windows; KIVI / fp8 by examples/eval/baselines.cpp's formulas; fp16 2). For PackKV rows
    also the bytes of the two other repacking modes (shadow caches) and a bits-per-element
    breakdown (codes, lens + mins, zero points + scales, permutations, index, residual window,
    sinks). Then the curves (KIVI-b; each PackKV family over its (r_K, r_V) grid) and the
    smallest setting of each with mean KL <= 0.01 nats/token (about +1% perplexity).

Row syntax (``--rows``, comma-separated)
    ``fp16`` ``fp8`` ``fp32`` ``kivi-B[:sink=K]``
    ``packkv:rk=R:rv=R[:gran=tok|head][:res=N][:repack=median|greedy|none][:block=N]
    [:attn=library|decompress][:sink=K][:sinkmode=lib|emu][:center=1][:lib.NAME=VALUE]``
    ``sink=K`` keeps the first K tokens of each sequence exact (fp16). For PackKV it goes to
    the library (``packkv.Cache(sink_tokens=K)``) when the binding accepts it, else it is
    EMULATED by the harness (``sinkmode=emu``: the K tokens stay in fp16 outside the library,
    the cache sees the rest of the stream, the dense attention merges them exactly, their
    bytes are counted); the JSON says which (``sink_mode``). ``center=1`` asks the library
    for its K centering transform; ``lib.NAME=VALUE`` passes any other ``packkv.Cache``
    keyword through. A lever the installed binding does not accept is an error that says so.

Exactness and speed (2 CPU cores)
    Chunks of at most 64 tokens, cut at every flush point of the backend (measured for PackKV
    by a probe cache), give exactly token-by-token decode semantics (kv_backends.py
    docstring); ``--check`` verifies it. The sweep uses the decompress path (``--attention``),
    one BLAS thread per process, ``--jobs`` worker processes, one job per (row, window).

Usage::

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=build-cpu/bindings/python/pkg python3 scripts/e2e/ppl_eval.py \\
        --jobs 2 --json build/e2e_ppl.json --plot build/e2e_ppl.png --markdown build/e2e_ppl.md
    python3 scripts/e2e/ppl_eval.py --check            # consistency checks (a few minutes)
    python3 scripts/e2e/ppl_eval.py --rows fp16,kivi-4:sink=4,packkv:rk=0.05:rv=0.1:sink=4
    python3 scripts/e2e/ppl_eval.py --model gemma3 --tokens 2048 --windows 1 ...
    python3 scripts/e2e/ppl_eval.py --from-json bench/e2e_ppl.json --plot build/e2e_ppl.png

Needs the packkv binding on PYTHONPATH (``pip install ./bindings/python``, or a CMake build's
``<build>/bindings/python/pkg``) for PackKV rows.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before numpy: small GEMMs, shared cores

import argparse
import hashlib
import inspect
import json
import math
import multiprocessing as mp
import re
import subprocess
import sys
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import e2e_report as rep  # noqa: E402
import kv_backends as kb  # noqa: E402

REPO = os.path.dirname(os.path.dirname(_HERE))
DEFAULT_TEXTS = [os.path.join(REPO, "data", "kjv_genesis.txt"),
                 os.path.join(REPO, "data", "go_strings.txt")]

# The default sweep (the study of bench/RESULTS.md, "End-to-end KL divergence", plus the rows the
# shared machine had no time for): fp16, fp8, KIVI-2..8 without and (3..5) with 4 sink tokens;
# PackKV with 4 sink tokens over an (r_K, r_V) grid at residual windows 128 and 64, without
# sinks, and with K centring. About 55 s per row and 4096-token window on an idle core
# (4 windows per row), several times that on a loaded machine.
PACKKV_PAIRS = [(0.025, 0.05), (0.035, 0.07), (0.04, 0.08), (0.05, 0.1)]


def default_rows() -> list[str]:
    rows = ["fp16", "fp8"] + [f"kivi-{b}" for b in range(2, 9)]
    rows += [f"kivi-{b}:sink=4" for b in (3, 4, 5)]
    for res in (128, 64):
        rows += [f"packkv:rk={rk}:rv={rv}:sink=4" + (f":res={res}" if res != 128 else "")
                 for rk, rv in PACKKV_PAIRS]
    rows += ["packkv:rk=0.035:rv=0.07", "packkv:rk=0.05:rv=0.1",
             "packkv:rk=0.035:rv=0.07:sink=4:center=1", "packkv:rk=0.05:rv=0.1:sink=4:center=1"]
    return rows


# --------------------------------------------------------------------------------------------
# Row specs
# --------------------------------------------------------------------------------------------

PACKKV_KEYS = {"rk", "rv", "gran", "res", "repack", "attn", "block", "sink", "sinkmode",
               "center"}
# center=1 -> the library's K centering transform: (field, name of its value in packkv.raw).
CENTER_KWARG = ("k_transform", "K_TRANSFORM_CENTER")


def _value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def parse_row(spec: str, attention: str) -> dict:
    """A row spec (module docstring) -> a row description."""
    if spec in ("fp16", "fp32", "fp8", "plain"):
        return {"spec": spec, "method": spec, "sink": 0}
    head, *opts = spec.split(":")
    kv = dict(p.split("=", 1) for p in opts)
    if head.startswith("kivi-"):
        if set(kv) - {"sink"}:
            raise SystemExit(f"bad row spec {spec!r}")
        return {"spec": spec, "method": "kivi", "bits": int(head[5:]),
                "sink": int(kv.get("sink", 0)), "sink_mode": "harness" if kv.get("sink") else None}
    if head == "packkv":
        lib = {k[4:]: _value(v) for k, v in kv.items() if k.startswith("lib.")}
        row = {"spec": spec, "method": "packkv",
               "rk": float(kv.get("rk", 0.1)), "rv": float(kv.get("rv", 0.2)),
               "gran": kv.get("gran", "tok"), "res": int(kv.get("res", 128)),
               "repack": kv.get("repack", "median"), "attn": kv.get("attn", attention),
               "block": int(kv.get("block", 64)), "sink": int(kv.get("sink", 0)),
               "sinkmode": kv.get("sinkmode"), "center": int(kv.get("center", 0)), "lib": lib}
        unknown = {k for k in kv if not k.startswith("lib.")} - PACKKV_KEYS
        if unknown or row["gran"] not in ("tok", "head") or \
                row["sinkmode"] not in (None, "lib", "emu"):
            raise SystemExit(f"bad row spec {spec!r}")
        return row
    raise SystemExit(f"bad row spec {spec!r}")


def cache_kwargs_supported() -> set:
    import packkv
    return set(inspect.signature(packkv.Cache.__init__).parameters) - {"self"}


def raw_fields_supported() -> set:
    """Fields of the binding's raw packkv_cache_params_t (SWIG struct)."""
    import packkv.raw as raw
    return {n for n, a in vars(raw.CacheParamsStruct).items() if isinstance(a, property)}


def _lever(kw: dict, raw: dict, name: str, value, spec: str) -> None:
    """Pass a packkv.Cache parameter as a keyword if the binding takes it, else as a raw
    struct field if the library has it, else fail: the library is too old."""
    if name in cache_kwargs_supported():
        kw[name] = value
    elif name in raw_fields_supported():
        raw[name] = value
    else:
        raise SystemExit(f"{spec}: the installed packkv has no parameter {name!r} "
                         "(library too old for this lever)")


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
        return kb.KiviBackend(row["bits"], sink_tokens=row["sink"])
    gran = {"tok": "per_token", "head": "per_token_head"}[row["gran"]]
    shadows = [r for r in ("median", "greedy", "none") if r != row["repack"]]
    kw = dict(rel_scale_k=row["rk"], rel_scale_v=row["rv"], scale_granularity=gran,
              residual_tokens=row["res"], block_tokens=row["block"], repack=row["repack"])
    have = cache_kwargs_supported() | raw_fields_supported()
    raw: dict = {}
    emulated = 0
    if row["sink"]:
        mode = row["sinkmode"] or ("lib" if "sink_tokens" in have else "emu")
        if mode == "lib":
            _lever(kw, raw, "sink_tokens", row["sink"], row["spec"])
        else:
            emulated = row["sink"]
        row["sink_mode"] = {"lib": "library", "emu": "emulated"}[mode]
    if row["center"]:
        import packkv.raw as praw
        _lever(kw, raw, CENTER_KWARG[0], getattr(praw, CENTER_KWARG[1], 1), row["spec"])
    for k, v in row["lib"].items():
        _lever(kw, raw, k, v, row["spec"])
    if raw:
        kw["raw_fields"] = raw
    return kb.PackKVBackend(attention=row["attn"], shadow_repacks=shadows, name=row["spec"],
                            emulated_sinks=emulated, **kw)


# --------------------------------------------------------------------------------------------
# Models and windows
# --------------------------------------------------------------------------------------------

def load_model(name: str):
    sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "kv_dump"))
    if name == "smollm2":
        import smollm2
        return smollm2.SmolLM2()
    if name == "gemma3":
        import gemma3
        return gemma3.Gemma3()
    raise SystemExit(f"unknown model {name!r}")


def encode(model, text: str) -> list[int]:
    if hasattr(model, "encode"):
        return model.encode(text)
    return model.tokenizer.encode(text).ids


def make_windows(model, texts: list[str], n_windows: int, tokens: int) -> list[dict]:
    """Consecutive windows of `tokens` + 1 ids (the last one only a target) from each text;
    a model with ``bos_id_per_window`` gets that BOS id first (then tokens - 1 text ids)."""
    bos = getattr(model, "bos_id_per_window", None)
    out = []
    for path in texts:
        with open(path, encoding="utf-8") as f:
            ids = encode(model, f.read())
        step = tokens if bos is None else tokens - 1
        need = n_windows * step + 1
        if len(ids) < need:
            raise SystemExit(f"{path}: {len(ids)} tokens, need {need}")
        for w in range(n_windows):
            win = ids[w * step:w * step + step + 1]
            if bos is not None:
                win = [bos] + win
            out.append({"text": os.path.relpath(path, REPO), "index": w,
                        "start_token": w * step, "ids": win})
    return out


# --------------------------------------------------------------------------------------------
# Running one row on one window
# --------------------------------------------------------------------------------------------

def log_softmax(logits: np.ndarray) -> np.ndarray:
    lg = logits.astype(np.float64)
    m = lg.max(axis=-1, keepdims=True)
    return lg - (np.log(np.exp(lg - m).sum(axis=-1, keepdims=True)) + m)


def kv_cfg(model):
    """The config a backend sees (Gemma 3: only its full-attention layers)."""
    return getattr(model, "kv_cfg", model.cfg)


def score(model, ids, backend, n_tokens: int, chunk: int, ref_logp=None, save_logp=None):
    """Read ids[:n_tokens] through `backend`; NLL of ids[p+1] at every position p. With
    ref_logp ([n_tokens, vocab] log-probabilities of the reference row) also the
    per-position KL(p_ref || p) in nats; save_logp (a writable [n_tokens, vocab] array)
    receives this row's log-probabilities. Returns (nll, kl or None)."""
    backend.reset(kv_cfg(model), n_tokens)
    bounds = kb.chunk_bounds(n_tokens, chunk, backend.flush_points(n_tokens))
    nll, kl = [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        lp = log_softmax(kb.forward_chunk(model, ids[a:b], a, backend, want_logits=True))
        tg = np.asarray(ids[a + 1:b + 1])
        nll.append(-lp[np.arange(len(tg)), tg])
        if save_logp is not None:
            save_logp[a:b] = lp
        if ref_logp is not None:
            rp = np.asarray(ref_logp[a:b], dtype=np.float64)
            kl.append((np.exp(rp) * (rp - lp)).sum(axis=-1))
    return np.concatenate(nll), (np.concatenate(kl) if kl else None)


def run_window(model, window: dict, row: dict, args, logp_path: str, calib=None) -> dict:
    """Score one row on one window; per-token NLL / KL, bytes, stats."""
    t0 = time.time()
    backend = make_backend(row, calib)
    n = args.tokens
    ref_logp = save = None
    if row["method"] == "fp16":
        save = np.lib.format.open_memmap(logp_path, "w+", np.float32,
                                         (n, model.cfg.vocab_size))
    else:
        ref_logp = np.load(logp_path, mmap_mode="r")
    nll, kl = score(model, window["ids"], backend, n, args.chunk, ref_logp, save)
    if save is not None:
        save.flush()
        del save
        kl = np.zeros_like(nll)
    by = backend.bytes()
    res = {"spec": row["spec"], "window": window["wi"], "nll": nll, "kl": kl,
           "all_in": int(by.all_in), "elements": int(by.elements)}
    if isinstance(backend, kb.PackKVBackend):
        p = backend.params
        res["bits_k"], res["bits_v"] = int(p.bits_k), int(p.bits_v)
        res["stats"] = by.detail["stats"]
        res["repack_bytes"] = by.detail["repack"]
        res["sink_mode"] = row.get("sink_mode")
        backend.check_shadows()
    if isinstance(backend, kb.Fp16Backend):
        res["calib"] = {"amax_k": backend.amax_k.tolist(), "amax_v": backend.amax_v.tolist()}
    backend.close()
    res["time_s"] = time.time() - t0
    return res


_G: dict = {}


def _job(job):
    row, wi, calib = job
    try:
        return run_window(_G["model"], _G["windows"][wi], row, _G["args"],
                          _G["logp"][wi], calib)
    except BaseException as e:  # report, keep the sweep going
        return {"spec": row["spec"], "window": wi, "error": f"{type(e).__name__}: {e}"}


def run_jobs(jobs, n_jobs: int):
    if n_jobs > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(n_jobs) as pool:   # workers inherit the model
            yield from pool.imap_unordered(_job, jobs)
    else:
        for j in jobs:
            yield _job(j)


def combine(row: dict, parts: list[dict], windows: list[dict]) -> dict:
    """One row's results over all windows: per-token NLL and KL concatenated, bytes summed,
    per-text means."""
    res = {k: v for k, v in row.items() if k not in ("lib",)}
    if row.get("lib"):
        res["lib"] = row["lib"]
    errs = [p["error"] for p in parts if "error" in p]
    if errs:
        res["error"] = errs[0]
        return res
    parts = sorted(parts, key=lambda p: p["window"])
    nll = np.concatenate([p["nll"] for p in parts])
    kl = np.concatenate([p["kl"] for p in parts])
    all_in = sum(p["all_in"] for p in parts)
    elements = sum(p["elements"] for p in parts)
    res.update(kld=float(kl.mean()), kld_se=float(kl.std(ddof=1) / math.sqrt(len(kl))),
               ppl=float(np.exp(nll.mean())), nll_mean=float(nll.mean()),
               all_in=all_in, elements=elements, bytes_per_element=all_in / elements,
               n_scored=int(len(nll)), time_s=float(sum(p["time_s"] for p in parts)),
               tokens_per_window=int(len(parts[0]["nll"])),
               nll=nll, kl=kl)
    per_text: dict = {}
    for p in parts:
        t = windows[p["window"]]["text"]
        d = per_text.setdefault(t, {"nll": [], "kl": []})
        d["nll"].append(p["nll"])
        d["kl"].append(p["kl"])
    res["per_text"] = {t: {"kld": float(np.concatenate(d["kl"]).mean()),
                           "ppl": float(np.exp(np.concatenate(d["nll"]).mean()))}
                       for t, d in per_text.items()}
    if "stats" in parts[0]:
        st: dict = {}
        for p in parts:
            for k, v in p["stats"].items():
                st[k] = st.get(k, 0) + v
        res["stats"] = st
        res["repack_bytes"] = {m: sum(p["repack_bytes"][m] for p in parts)
                               for m in parts[0]["repack_bytes"]}
        res["bits_k"], res["bits_v"] = parts[0]["bits_k"], parts[0]["bits_v"]
        res["sink_mode"] = parts[0].get("sink_mode")
        res["bits_breakdown"] = rep.bits_breakdown(res)
    if "calib" in parts[0]:
        res["calib"] = [p["calib"] for p in parts]
    return res


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                       text=True).strip()
    except Exception:
        return "unknown"


def library_info() -> dict:
    try:
        import packkv
        path = os.path.dirname(os.path.abspath(packkv.__file__))
        root = os.path.dirname(os.path.dirname(_HERE))
        # repo-relative when built in this checkout; a machine path says nothing elsewhere
        where = os.path.relpath(path, root) if path.startswith(root + os.sep) else "outside this checkout"
        return {"path": where,
                "cache_kwargs": sorted(cache_kwargs_supported()),
                "raw_fields": sorted(raw_fields_supported()),
                "commit": os.environ.get("PACKKV_LIBRARY_COMMIT", git_commit())}
    except Exception as e:
        return {"error": str(e)}


def _slug(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]", "_", spec)


class Store:
    """Directory of finished (row, window) results, so that runs add to each other: the fp16
    reference log-probabilities (fp16_logp_<w>.npy, the KL reference), and one part per row
    and window (<row>_w<w>.npz: per-token nll and kl; <row>_w<w>.json: bytes, stats).
    windows.json pins the window definition (texts, token ids); a different one is an
    error (use another --store)."""

    def __init__(self, path: str, windows: list[dict]):
        self.path = path
        os.makedirs(path, exist_ok=True)
        desc = [{"text": w["text"], "start_token": w["start_token"],
                 "ids_sha": hashlib.sha256(np.asarray(w["ids"], np.int64).tobytes()).hexdigest()}
                for w in windows]
        f = os.path.join(path, "windows.json")
        if os.path.exists(f):
            with open(f) as fh:
                if json.load(fh) != desc:
                    raise SystemExit(f"{path} holds other windows: use another --store")
        else:
            with open(f, "w") as fh:
                json.dump(desc, fh, indent=1)

    def logp(self, wi: int) -> str:
        return os.path.join(self.path, f"fp16_logp_{wi}.npy")

    def _base(self, spec, wi):
        return os.path.join(self.path, f"{_slug(spec)}_w{wi}")

    def has(self, spec, wi) -> bool:
        return os.path.exists(self._base(spec, wi) + ".json")

    def save(self, part: dict) -> None:
        base = self._base(part["spec"], part["window"])
        np.savez(base + ".npz", nll=part["nll"], kl=part["kl"])
        with open(base + ".json.tmp", "w") as f:
            json.dump({k: v for k, v in part.items() if k not in ("nll", "kl")}, f,
                      default=float)
        os.replace(base + ".json.tmp", base + ".json")      # the part exists once complete

    def load(self, spec, wi) -> dict:
        base = self._base(spec, wi)
        with open(base + ".json") as f:
            part = json.load(f)
        z = np.load(base + ".npz")
        part["nll"], part["kl"] = z["nll"], z["kl"]
        return part


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["smollm2", "gemma3"], default="smollm2")
    ap.add_argument("--texts", default=",".join(os.path.relpath(t, REPO) for t in DEFAULT_TEXTS),
                    help="comma-separated text files (default: KJV Genesis and Go strings)")
    ap.add_argument("--windows", type=int, default=2, help="windows per text (default 2)")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per window (default 4096)")
    ap.add_argument("--window-ids", default=None,
                    help="comma-separated window numbers to run and report (default all)")
    ap.add_argument("--store", default=None, help="results store (default "
                    "build/e2e_store/<model>_<tokens>); finished (row, window) parts there "
                    "are reused, not re-run")
    ap.add_argument("--chunk", type=int, default=64, help="max chunk (default 64)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated row specs (default: the sweep in default_rows)")
    ap.add_argument("--report-rows", default=None, help="rows of the report (default: the "
                    "--rows plus every other row complete in the store)")
    ap.add_argument("--attention", choices=["library", "decompress"], default="decompress",
                    help="PackKV attention path for rows without attn= (default decompress)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--plot", default=None, help="write the PNG plot here")
    ap.add_argument("--markdown", default=None, help="write the markdown table here")
    ap.add_argument("--from-json", default=None,
                    help="re-make the markdown / plot of an earlier --json run, no model runs")
    ap.add_argument("--check", action="store_true", help="run the consistency checks only")
    ap.add_argument("--check-tokens", type=int, default=448)
    args = ap.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        report["analysis"] = rep.analyse(report["results"])
        return rep.emit(report, args)
    if args.check:
        import e2e_checks
        return e2e_checks.run_checks(args)

    specs = args.rows.split(",") if args.rows else default_rows()
    if "fp16" not in specs:
        specs = ["fp16"] + specs
    t0 = time.time()
    model = load_model(args.model)
    texts = [os.path.join(REPO, t) if not os.path.isabs(t) else t for t in args.texts.split(",")]
    windows = make_windows(model, texts, args.windows, args.tokens)
    for i, w in enumerate(windows):
        w["wi"] = i
    wids = ([int(x) for x in args.window_ids.split(",")] if args.window_ids
            else list(range(len(windows))))
    store = Store(args.store or os.path.join(REPO, "build", "e2e_store",
                                             f"{args.model}_{args.tokens}"), windows)
    _G.update(model=model, windows=windows, args=args,
              logp=[store.logp(i) for i in range(len(windows))])
    print(f"[{args.model}: windows {wids} of {len(windows)} x {args.tokens} tokens from "
          f"{len(texts)} texts; store {store.path}; model loaded in {time.time() - t0:.1f}s]",
          flush=True)
    rows = [parse_row(s, args.attention) for s in specs]

    # fp16 first (the KL reference and fp8's calibration), then the rest; one job per
    # (row, window) not yet in the store.
    for batch in ([r for r in rows if r["spec"] == "fp16"],
                  [r for r in rows if r["spec"] != "fp16"]):
        calib = {}
        for wi in wids:
            if store.has("fp16", wi):
                calib[wi] = store.load("fp16", wi).get("calib")
        jobs = [(r, wi, calib.get(wi)) for r in batch for wi in wids
                if not store.has(r["spec"], wi)]
        left = {r["spec"]: sum(1 for j in jobs if j[0] is r) for r in batch}
        for p in run_jobs(jobs, args.jobs):
            if "error" in p:
                print(f"{p['spec']} window {p['window']}: ERROR {p['error']}", flush=True)
                continue
            store.save(p)
            left[p["spec"]] -= 1
            print(f"  {p['spec']} window {p['window']}: KL {p['kl'].mean():.5f}, "
                  f"{8 * p['all_in'] / p['elements']:.3f} bits/elem, {p['time_s']:.0f}s"
                  + ("" if left[p["spec"]] else "  (row done)"), flush=True)

    found = set()
    for f in os.listdir(store.path):
        if f.endswith(".json") and f != "windows.json":
            with open(os.path.join(store.path, f)) as fh:
                found.add(json.load(fh)["spec"])
    report_specs = (args.report_rows.split(",") if args.report_rows
                    else specs + sorted(found - set(specs)))
    results = []
    for spec in report_specs:
        if not all(store.has(spec, wi) for wi in wids):
            print(f"{spec}: incomplete in the store for windows {wids}, not reported", flush=True)
            continue
        results.append(combine(parse_row(spec, args.attention),
                               [store.load(spec, wi) for wi in wids], windows))
    results.sort(key=lambda r: r["spec"] != "fp16")
    sel = [windows[i] for i in wids]
    meta = {"model": sys.modules[type(model).__module__].MODEL_NAME, "model_key": args.model,
            "kv_layers": getattr(model, "kv_layer_ids", list(range(model.cfg.n_layers))),
            "texts": sorted({w["text"] for w in sel}, key=lambda t: [w["text"] for w in sel].index(t)),
            "windows_per_text": len(sel) // len({w["text"] for w in sel}),
            "tokens": args.tokens, "scored_tokens": args.tokens * len(sel),
            "windows": [{k: w[k] for k in ("text", "index", "start_token")} for w in sel],
            "chunk": args.chunk, "attention": args.attention, "ref_ppl": results[0]["ppl"],
            "commit": git_commit(), "library": library_info(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wall_s": time.time() - t0, "jobs": args.jobs,
            "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])}
    report = {"meta": meta, "results": results}
    report["analysis"] = rep.analyse(results)
    if args.json:
        slim = json.loads(json.dumps(
            {"meta": meta, "results": [{k: v for k, v in r.items() if k not in ("nll", "kl")}
                                       for r in results], "analysis": report["analysis"]},
            default=float))
        with open(args.json, "w") as f:
            json.dump(slim, f, indent=1)
    rc = rep.emit(report, args)
    print(f"[total {time.time() - t0:.0f}s]")
    return rc


if __name__ == "__main__":
    sys.exit(main())

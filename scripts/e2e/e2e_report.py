"""Analysis, tables and plot of ``ppl_eval.py`` results (one JSON report in, markdown + PNG
out).

The primary metric is the mean KL divergence of each row's next-token distribution from the
fp16 cache's (``kld``, nats per token, over every scored token of every window); the bound
of interest is KLD_BOUND = 0.01 nats/token (about the NLL increase of +1% perplexity,
log(1.01) = 0.00995). Per curve (KIVI-b, KIVI-b with sinks, each PackKV family over its
(r_K, r_V) grid and repacking mode) two readings: the smallest *measured* setting within
the bound, and the bytes where a least-squares monotone (isotonic) fit of KL against bytes
crosses it, interpolated in log(bytes) and log(KL).
"""

from __future__ import annotations

import math
import os

import numpy as np

KLD_BOUND = 0.01
KLD_BOUNDS = (0.01, 0.05)
KIND_ORDER = {"fp32": 0, "fp16": 1, "fp8": 2, "kivi": 3, "packkv": 4}


# --------------------------------------------------------------------------------------------
# Bits per element
# --------------------------------------------------------------------------------------------

def len_bits(b: int) -> int:
    """Bits of one encode-length field for b-bit codes (format: ceil(log2(b + 1)))."""
    e = 0
    while (1 << e) < b + 1:
        e += 1
    return e


PACK_TOKENS = 16   # tokens per pack: one MINS + LENS header per channel per 16 tokens


def bits_breakdown(res: dict) -> dict:
    """All-in bits per K/V element of a PackKV row, by part: codes (tile bytes minus the
    per-round headers), lens + mins (per-round headers: for every 16 compressed tokens and
    channel, a b-bit min and a ceil(log2(b+1))-bit length, the round-major format's
    constant), z/s (zero points and scales), perm, index, residual window, sinks (emulated
    by the harness, or the library's, which its stats count in residual_bytes), other (compressed_bytes_used not in the
    named parts: alignment). Sums to bytes_per_element x 8."""
    st, e = res["stats"], res["elements"]
    per_head_values = st["n_compressed_tokens"]          # summed over layers and windows
    kv_heads_dim = None
    if per_head_values:
        # tile bytes are per (token, head, channel); recover H*D from the fp16 bytes
        # (fp16_bytes = 2 bytes x 2 (K, V) x tokens x H x D).
        kv_heads_dim = st["fp16_bytes"] // (4 * st["n_tokens"])
    hdr = {}
    for kv, b in (("k", res["bits_k"]), ("v", res["bits_v"])):
        hdr[kv] = (per_head_values // PACK_TOKENS) * (kv_heads_dim or 0) * (b + len_bits(b)) / 8
    tiles = st["k_tile_bytes"] + st["v_tile_bytes"]
    # Library sink tokens are stored (and counted) with the residual window: 2 bytes per
    # element for sink / tokens of every sequence's elements.
    sink_lib = 0
    if res.get("sink") and res.get("sink_mode") == "library":
        sink_lib = 2 * e * res["sink"] / res["tokens_per_window"]
    parts = {
        "codes": tiles - hdr["k"] - hdr["v"],
        "lens+mins": hdr["k"] + hdr["v"],
        "z/s": st["k_scale_bytes"] + st["v_scale_bytes"],
        "perm": st["perm_bytes"],
        "index": st["index_bytes"],
        "residual window": st["residual_bytes"] - sink_lib,
        "sinks": st.get("sink_bytes", 0) + sink_lib,
    }
    named = tiles + parts["z/s"] + parts["perm"] + parts["index"]
    parts["other (alignment)"] = st["compressed_bytes_used"] - named
    out = {k: 8.0 * v / e for k, v in parts.items()}
    out["total"] = 8.0 * res["all_in"] / e
    return out


def phase_avg_bytes(res: dict, kivi_group: int = 32, kivi_residual: int = 128):
    """All-in bytes per element with the fp16 window at its AVERAGE occupancy instead of the
    final state's. A flush cache's window holds R .. R + N - 1 tokens (N = block or KIVI
    group) depending on where the sequence length falls; at one fixed length (4096) the
    final-state bytes carry that phase as noise (e.g. 4 sink tokens shift a PackKV window
    from 128 to 188 tokens: +0.23 bit per element). Here: sinks s at 2 bytes, the window at
    R + (N - 1) / 2 tokens at 2 bytes, every other token at the row's measured compressed
    cost per element (PackKV: compressed_bytes_used / compressed elements; KIVI: b/8 + 1/8
    for the fp16 (z, s) of 32 values). None for rows without a window."""
    t, sink = res.get("tokens_per_window"), res.get("sink", 0) or 0
    if not t:
        return None
    if res["method"] == "packkv":
        st = res["stats"]
        per_tok = st["fp16_bytes"] / st["n_tokens"] / 2          # elements per token-layer
        c = st["compressed_bytes_used"] / (st["n_compressed_tokens"] * per_tok)
        w = res["res"] + (res["block"] - 1) / 2
    elif res["method"] == "kivi":
        c = res["bits"] / 8 + 4 / 32
        w = kivi_residual + (kivi_group - 1) / 2
    else:
        return None
    return (2 * sink + 2 * w + (t - sink - w) * c) / t


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------

def family_of(r: dict) -> str:
    """Curve a row belongs to (PackKV: scale granularity, window, sinks, levers)."""
    sink = f" sink{r['sink']}" if r.get("sink") else ""
    if r["method"] == "packkv":
        g = "per-token" if r["gran"] == "tok" else "per-token-head"
        extra = "".join(f" {k}={v}" for k, v in sorted((r.get("lib") or {}).items()))
        return (f"packkv {g} res{r['res']}{sink}" + (" center" if r.get("center") else "")
                + extra)
    if r["method"] == "kivi":
        return "kivi" + sink
    return r["method"]


def curves(results: list[dict], key: str) -> dict:
    """{curve: [(bytes_per_element, r[key], spec)]}; each PackKV row gives one point per
    repacking mode (same values, that mode's bytes)."""
    out: dict = {}
    for r in results:
        if "error" in r or r["method"] in ("fp32", "plain") or r.get(key) is None:
            continue
        fam = family_of(r)
        if r["method"] == "packkv":
            for mode, all_in in r["repack_bytes"].items():
                out.setdefault(f"{fam} {mode}", []).append(
                    (all_in / r["elements"], r[key], r["spec"]))
        else:
            out.setdefault(fam, []).append((r["bytes_per_element"], r[key], r["spec"]))
    return out


def isotonic_fit(points):
    """Least-squares fit of y as a non-increasing function of bytes (pool adjacent
    violators) over (bytes, y, ...) points; [(bytes, fitted y)] with bytes ascending."""
    pts = sorted(points, key=lambda p: p[0])
    blocks = []
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


def crossing(points, thr: float, log_y: bool = True):
    """Bytes where the isotonic fit of a curve reaches y = thr, interpolated linearly in
    log(bytes) (and log(y) when log_y and both ends are > 0). Returns (bytes, kind): kind
    'interp', 'below' (already within at the smallest size measured: an upper bound) or
    'none'."""
    f = isotonic_fit(points)
    if not f:
        return None, "none"
    if f[0][1] <= thr:
        return f[0][0], "below"
    for (b1, y1), (b2, y2) in zip(f[:-1], f[1:]):
        if y1 > thr >= y2:
            if log_y and y2 > 0:
                t = (math.log(thr) - math.log(y1)) / (math.log(y2) - math.log(y1))
            else:
                t = (thr - y1) / (y2 - y1)
            return math.exp(math.log(b1) + t * (math.log(b2) - math.log(b1))), "interp"
    return None, "none"


def smallest_within(points, thr: float):
    """The measured point with the fewest bytes whose y <= thr: (bytes, y, spec) or None."""
    ok = [p for p in points if p[1] <= thr]
    return min(ok, key=lambda p: p[0]) if ok else None


def analyse(results: list[dict]) -> dict:
    """Δppl of every row against fp16 (with its paired SE where per-token NLLs are present),
    the KL and Δppl curves, each curve's smallest measured setting within each KL bound and
    its isotonic crossing, and the summary (best PackKV vs fp16 and vs best KIVI)."""
    ref = next(r for r in results if r["method"] == "fp16")
    for r in results:
        if "error" in r:
            continue
        r["delta_pct"] = 100.0 * (r["ppl"] / ref["ppl"] - 1.0)
        if r.get("nll") is not None and ref.get("nll") is not None:
            d = np.asarray(r["nll"]) - np.asarray(ref["nll"])
            r["delta_se_pct"] = (100.0 * float(d.std(ddof=1) / math.sqrt(len(d)))
                                 * r["ppl"] / ref["ppl"])
    for r in results:
        if "error" not in r and r.get("stats") is not None or r.get("method") == "kivi":
            r["bpe_phase_avg"] = phase_avg_bytes(r)
    cv = curves(results, "kld")
    per_curve = {}
    for name, pts in cv.items():
        per_curve[name] = {}
        for thr in KLD_BOUNDS:
            m = smallest_within(pts, thr)
            per_curve[name][str(thr)] = {
                "measured": None if m is None else {"bytes": m[0], "kld": m[1], "spec": m[2]},
                "fit": crossing(pts, thr)}
    summary = {}
    for thr in KLD_BOUNDS:
        t = str(thr)
        best = {}
        for kind in ("kivi", "packkv"):
            cands = [(v[t]["measured"], name) for name, v in per_curve.items()
                     if name.startswith(kind) and v[t]["measured"]]
            if cands:
                m, name = min(cands, key=lambda c: c[0]["bytes"])
                best[kind] = dict(m, curve=name)
        s = {"kivi": best.get("kivi"), "packkv": best.get("packkv")}
        if best.get("packkv"):
            s["packkv_vs_fp16"] = 2.0 / best["packkv"]["bytes"]
            if best.get("kivi"):
                s["packkv_vs_kivi"] = best["kivi"]["bytes"] / best["packkv"]["bytes"]
        summary[t] = s
    return {"curves": cv, "per_curve": per_curve, "summary": summary,
            "curves_ppl": curves(results, "delta_pct")}


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def progress(res, ref, i, n):
    if "error" in res:
        print(f"[{i}/{n}] {res['spec']}: ERROR {res['error']}", flush=True)
        return
    d = 100 * (res["ppl"] / ref["ppl"] - 1) if ref else 0.0
    print(f"[{i}/{n}] {res['spec']}: KL {res['kld']:.5f}, ppl {res['ppl']:.4f} ({d:+.2f}%), "
          f"{res['bytes_per_element']:.4f} B/elem, {res['time_s']:.0f}s", flush=True)


def _row_label(r):
    if r["method"] == "packkv":
        s = f"packkv r {r['rk']:g}/{r['rv']:g}"
        if r.get("gran") != "tok":
            s += " per-(token,head)"
        if r.get("res") != 128:
            s += f" res{r['res']}"
        if r.get("center"):
            s += " center"
        for k, v in sorted((r.get("lib") or {}).items()):
            s += f" {k}={v}"
        return s
    return r["spec"].split(":")[0]


def _sinks(r):
    if not r.get("sink"):
        return "0"
    return f"{r['sink']} ({r.get('sink_mode') or 'harness'})"


def markdown(report: dict) -> str:
    res, an, meta = report["results"], report["analysis"], report["meta"]
    texts = meta["texts"]
    lines = [
        f"Model: {meta['model']}; KV layers through the backend: {meta['kv_layers']}. Texts: "
        + ", ".join(f"`{t}`" for t in texts) + f"; {meta['windows_per_text']} windows of "
        f"{meta['tokens']} tokens each, every position scored ({meta['scored_tokens']} scored "
        f"tokens). fp16 cache ppl {meta['ref_ppl']:.4f}. Commit {meta['commit']}, "
        f"{meta['date']}, {meta['jobs']} jobs on 2 shared CPU cores, wall {meta['wall_s'] / 60:.1f} min.",
        "",
        "KL: mean KL(p_fp16 || p_row) over all scored tokens, nats/token (± SE over tokens; "
        "tokens are correlated, so the true noise is larger), then per text. Δppl: "
        "perplexity change vs the fp16 cache (± paired SE). B/elem: all-in bytes per K/V "
        "element, final states summed over windows and layers (PackKV: median repacking; "
        "greedy / none beside). Sinks: first k tokens of each sequence kept in fp16 "
        "(library = packkv sink_tokens; emulated = kept by the harness outside the library; "
        "harness = KIVI).",
        "",
        "| row | sinks | bits K/V | KL | " + " | ".join(f"KL {os.path.basename(t).split('.')[0]}"
                                                  for t in texts)
        + " | ppl | Δppl | B/elem | greedy | none | × fp16 | B/elem phase-avg |",
        "|---|---|---|---|" + "---|" * len(texts) + "---|---|---|---|---|---|---|",
    ]
    ok = [r for r in res if "error" not in r]
    for r in sorted(ok, key=lambda r: (KIND_ORDER.get(r["method"], 9), family_of(r),
                                       -r["bytes_per_element"])):
        pt = r.get("per_text", {})
        kl_t = " | ".join(f"{pt[t]['kld']:.4f}" if t in pt else "" for t in texts)
        se = r.get("delta_se_pct")
        dp = f"{r['delta_pct']:+.2f}%" + (f" ± {se:.2f}" if se is not None else "")
        bits = f"{r['bits_k']}/{r['bits_v']}" if "bits_k" in r else (
            str(r["bits"]) if r["method"] == "kivi" else "")
        if r["method"] == "packkv":
            rb, e = r["repack_bytes"], r["elements"]
            gb, nb = f"{rb['greedy'] / e:.4f}", f"{rb['none'] / e:.4f}"
        else:
            gb = nb = ""
        lines.append(f"| {_row_label(r)} | {_sinks(r)} | {bits} | {r['kld']:.5f} ± "
                     f"{r.get('kld_se', 0):.5f} | {kl_t} | {r['ppl']:.4f} | {dp} | "
                     f"{r['bytes_per_element']:.4f} | {gb} | {nb} | "
                     f"{2.0 / r['bytes_per_element']:.2f} | "
                     + (f"{r['bpe_phase_avg']:.4f} |" if r.get("bpe_phase_avg") else " |"))
    for r in res:
        if "error" in r:
            lines.append(f"| {r['spec']} | error: {r['error']} |")
    lines += ["", "Per curve: the smallest measured setting with mean KL <= bound, and where "
              "the curve's monotone fit crosses the bound ('<=': within at the smallest size "
              "measured).", "",
              "| curve | smallest within KL 0.01 | B/elem | × fp16 | fit at 0.01 | "
              "smallest within KL 0.05 | B/elem | fit at 0.05 |", "|---|---|---|---|---|---|---|---|"]
    for name, v in an["per_curve"].items():
        cells = []
        for t in ("0.01", "0.05"):
            m, (fb, kind) = v[t]["measured"], v[t]["fit"]
            fit = "n/a" if fb is None else (f"<= {fb:.4f}" if kind == "below" else f"{fb:.4f}")
            if t == "0.01":
                cells += ([m["spec"], f"{m['bytes']:.4f}", f"{2.0 / m['bytes']:.2f}"]
                          if m else ["none", "", ""]) + [fit]
            else:
                cells += ([m["spec"], f"{m['bytes']:.4f}"] if m else ["none", ""]) + [fit]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Summary (smallest measured setting within the bound, any curve, any "
              "repacking mode):", "",
              "| KL bound | smallest KIVI | B/elem | smallest PackKV | B/elem | PackKV × fp16 "
              "(goal >= 5) | KIVI / PackKV (goal >= 1.3) |", "|---|---|---|---|---|---|---|"]
    for t, sm in an["summary"].items():
        k, p = sm.get("kivi"), sm.get("packkv")
        kc = [k["spec"], f"{k['bytes']:.4f}"] if k else ["none", ""]
        pc = ([f"{p['spec']} ({p['curve'].split()[-1]})", f"{p['bytes']:.4f}",
               f"{sm['packkv_vs_fp16']:.2f}"] if p else ["none", "", ""])
        vk = f"{sm['packkv_vs_kivi']:.2f}" if "packkv_vs_kivi" in sm else "n/a"
        lines.append(f"| {t} | " + " | ".join(kc + pc + [vk]) + " |")
    best = an["summary"].get(str(0.01), {}).get("packkv")
    if best:
        r = next(x for x in res if x["spec"] == best["spec"])
        bb = bits_breakdown_for_mode(r, best["curve"].split()[-1])
        lines += ["", f"Bits per element of `{best['spec']}` ({best['curve'].split()[-1]} "
                  "repacking, the smallest PackKV setting within KL 0.01): " +
                  ", ".join(f"{k} {v:.3f}" for k, v in bb.items())]
    return "\n".join(lines)


def bits_breakdown_for_mode(r: dict, mode: str) -> dict:
    """bits_breakdown of a row with another repacking mode's bytes: repacking changes only
    tile and perm bytes; the difference is put on 'codes' (tile payload) and noted."""
    bb = dict(r["bits_breakdown"])
    if mode in r["repack_bytes"]:
        diff = 8.0 * (r["repack_bytes"][mode] - r["all_in"]) / r["elements"]
        bb["codes"] += diff
        bb["total"] += diff
    return bb


def plot(report: dict, path: str) -> None:
    """Left: mean KL vs all-in bytes per element (log-log), each curve's monotone fit, the
    0.01 bound. Right: perplexity change vs bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    an, m = report["analysis"], report["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.8))
    colors = iter(["navy", "tab:green", "tab:orange", "tab:brown", "tab:pink", "tab:cyan",
                   "tab:olive", "tab:gray", "gold", "teal"])
    style = {}
    for name in an["curves"]:
        if name.startswith("packkv") and not name.endswith("median"):
            continue
        if name.startswith("kivi"):
            style[name] = dict(color="tab:red" if name == "kivi" else "darkred",
                               marker="s" if name == "kivi" else "P")
        elif name in ("fp8", "fp16"):
            style[name] = dict(color="tab:purple" if name == "fp8" else "black",
                               marker="D" if name == "fp8" else "*")
        else:
            style[name] = dict(color=next(colors, "tab:gray"), marker="o")
    for ax, key, cv in ((axes[0], "kld", an["curves"]), (axes[1], "ppl", an["curves_ppl"])):
        for name, st in style.items():
            pts = sorted(cv.get(name, []))
            if key == "kld":
                pts = [p for p in pts if p[1] > 0]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], st["marker"], color=st["color"],
                    ms=5, alpha=0.8)
            f = isotonic_fit(pts)
            ax.plot([p[0] for p in f], [p[1] for p in f], color=st["color"], lw=1.4,
                    label=name.replace(" median", ""))
            for b, y, spec in pts:
                if name.startswith("kivi"):
                    lab = spec.split(":")[0].replace("kivi-", "b")
                elif name.startswith("packkv"):
                    kv = dict(o.split("=", 1) for o in spec.split(":")[1:])
                    lab = f"{kv.get('rk')}/{kv.get('rv')}"
                else:
                    continue
                ax.annotate(lab, (b, y), fontsize=6, textcoords="offset points",
                            xytext=(3, 3), color=st["color"])
        ax.set_xscale("log")
        ax.axvline(0.4, color="tab:green", ls="-.", lw=0.8)
        ax.text(0.4, 0.98, " 5x smaller than fp16", fontsize=7, color="tab:green",
                transform=ax.get_xaxis_transform(), va="top")
        ax.set_xlabel("all-in bytes per K/V element (fp16 = 2)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].axhline(KLD_BOUND, color="gray", ls="--", lw=0.8)
    axes[0].set_ylabel("mean KL(p_fp16 || p) per token, nats")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].set_yscale("symlog", linthresh=1.0)
    axes[1].axhline(1.0, color="gray", ls="--", lw=0.8)
    axes[1].set_ylabel("perplexity change vs fp16 cache (%)")
    fig.suptitle(f"{m['model'].split(' (')[0]}, layers {m['kv_layers'] if len(m['kv_layers']) < 8 else 'all'}"
                 f" through the cache; {len(m['texts'])} texts x {m['windows_per_text']} windows"
                 f" x {m['tokens']} tokens = {m['scored_tokens']} scored; fp16 ppl "
                 f"{m['ref_ppl']:.3f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def emit(report: dict, args) -> int:
    md = markdown(report)
    print(md)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0

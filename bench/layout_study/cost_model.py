#!/usr/bin/env python3
"""Layout study of issue 14: combines the SASS counts of decode_step.cu (count_sass.py
--csv) with the width statistics of the real KV data (packkv_pack_widths "stats" and
"summary" lines) into, per rate pair and candidate: bytes against (a), decode-step
instructions per code executed by a warp on the real width distribution, and a time
model.

Executed instructions per round per lane (32 codes):
  a1, a2: the loop count (branch-free);
  b:      b0 + sum over the two lane slots and w in {1,2,4,8} of P(w present among the 32
          lanes of the slot) * (b_w - b0) / 2: a warp runs every path present in it; the
          switch scaffolding (jump table, reconvergence) is not included;
  c, c4:  sum over W of P(tile width W) * c_W: the width is warp-uniform (no divergence);
          the uniform switch is not included;
  d:      d0 + (d8 - d0) / 8 * (mean largest L over the 64 channels of a warp).
Time model (bench/RESULTS.md, "Layout study"): a decode step limited by the larger of
memory time and issue time, in units of the time to read one bit at copy bandwidth
(times and bytes x time printed relative to a2, today's layout with its best decode):
t = max(bits per code, instructions per code / k), k = 1.25 (H100) or 0.87 (H200): the
issue's budget of instructions per code per bit read at the bandwidth limit. Only the
decode step counts here (ldmatrix, mma, softmax and scales add the same amount to every
candidate), so the instruction-side differences are upper bounds of the speed gains.
The D = 128 rows reuse the width statistics of the D = 64 data (lane slots of 32 lanes).
Usage: cost_model.py PACK_WIDTHS_OUTPUT SASS_CSV [D (64 or 128, default 64)]"""
import sys
from collections import defaultdict

RESTRICT = {0: 0, 1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
    pw, csv = sys.argv[1], sys.argv[2]
    D = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    cpl = D // 32  # channels (lane slots) per lane
    cnt = {}  # instructions per code, by kernel: a1, a2, b0..b8, c0..c8, d0, d4, d8 of this D
    for ln in open(csv):
        name, _, per_code = ln.strip().split(",")
        parts = name.split("_")
        if parts[-1].isdigit() and len(parts) >= 2 and parts[1] == str(D) and parts[0] in ("a1", "a2"):
            cnt[parts[0]] = float(per_code)
        elif len(parts) == 3 and parts[1] == str(D):
            cnt[parts[0] + parts[2]] = float(per_code)
    summ = defaultdict(lambda: [0, 0, 0, 0])  # rate -> blob, grow_b, grow_c, grow_c4
    stats = defaultdict(lambda: defaultdict(lambda: [0] * 33))  # rate -> K/V -> summed fields
    for ln in open(pw):
        f = ln.strip().split(",")
        if f[0] == "summary":
            key = (f[2], f[3])
            for i in range(4):
                summ[key][i] += int(f[4 + i])
        elif f[0] == "stats":
            key = (f[2], f[3])
            acc = stats[key][f[4]]
            for i, v in enumerate(f[5:]):
                acc[i] += int(v)
    b0 = cnt["b0"]
    print(f"head_dim {D}\n")
    print("| r_K / r_V | layout | bytes vs (a) | bits/code | instr/code (decode step) | time H100 | time H200 | bytes x time H100 | bytes x time H200 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in sorted(summ, key=lambda k: -float(k[0])):
        blob, gb, gc, gc4 = summ[key]
        per = {}
        codes = 0
        for kv in ("K", "V"):
            s = stats[key][kv]
            packs, hist = s[0], s[1:10]
            t16, t16h = s[10], s[11:20]
            slots, has = s[20], s[21:30]
            warps, wmax = s[30], s[31]
            w = packs * 16  # codes of this K or V
            codes += w
            # per lane slot: the paths present among its 32 lanes, each 1/cpl of a b_W count
            e_b = b0 + sum(has[x] / slots * (cnt[f"b{x}"] - b0) / cpl for x in (1, 2, 4, 8)) * cpl
            e_c = sum(t16h[W] / t16 * cnt[f"c{W}"] for W in range(9))
            e_c4 = sum(t16h[W] / t16 * cnt[f"c{RESTRICT[W]}"] for W in range(9))
            e_d = cnt["d0"] + (cnt["d8"] - cnt["d0"]) / 8 * (wmax / warps)
            for name, v in (("a1", cnt["a1"]), ("a2", cnt["a2"]), ("b", e_b), ("c", e_c), ("c4", e_c4), ("d", e_d)):
                per[name] = per.get(name, 0) + v * w
        bits_a = blob * 8 / codes
        rows = [("a1", 0), ("a2", 0), ("b", gb), ("c", gc), ("c4", gc4), ("d", 0)]
        ba = blob * 8 / codes, per["a2"] / codes
        base = (ba[0], max(ba[0], ba[1] / 1.25), max(ba[0], ba[1] / 0.87))  # times relative to a2
        for name, grow in rows:
            bits = (blob + grow) * 8 / codes
            ins = per[name] / codes
            t1, t2 = max(bits, ins / 1.25), max(bits, ins / 0.87)
            print(f"| {key[0]} / {key[1]} | {name} | {100 * grow / blob:+.1f}% | {bits:.2f} | {ins:.2f} | "
                  f"{t1 / base[1]:.2f} | {t2 / base[2]:.2f} | {bits * t1 / (base[0] * base[1]):.2f} | "
                  f"{bits * t2 / (base[0] * base[2]):.2f} |")


if __name__ == "__main__":
    main()

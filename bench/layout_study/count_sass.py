#!/usr/bin/env python3
"""Counts the SASS instructions of the round loop of every kernel in a `cuobjdump -sass`
listing (bench/layout_study/decode_step.cu): the loop is the range from the target of the
last backward branch to that branch (the round loop is the only real loop: the inner
loops are unrolled), NOPs left out. Prints per kernel the instructions per round per lane,
per code (32 codes per lane per round) and the count by opcode. Usage:
    cuobjdump -sass decode_step.cubin | python3 count_sass.py [--csv]"""
import re
import sys
from collections import Counter

CODES_PER_LANE = 32


def parse(lines):
    funcs, name = {}, None
    for ln in lines:
        m = re.search(r"Function : (\S+)", ln)
        if m:
            name = m.group(1)
            funcs[name] = []
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", ln)
        if m and name:
            funcs[name].append((int(m.group(1), 16), m.group(2).strip()))
    return funcs


def loop_body(ins):
    best = None
    for addr, text in ins:
        m = re.match(r"(@!?U?P\w+\s+)?BRA\s+(?:`?\(?)?(0x[0-9a-f]+)", text)
        if m:
            tgt = int(m.group(2), 16)
            if tgt < addr:
                best = (tgt, addr)
    if best is None:
        return []
    return [t for a, t in ins if best[0] <= a <= best[1]]


def opcode(text):
    t = re.sub(r"^@!?U?P\w+\s+", "", text)
    return t.split()[0].split(".")[0]


def main():
    csv = "--csv" in sys.argv
    funcs = parse(sys.stdin.read().splitlines())
    for name in sorted(funcs):
        body = [t for t in loop_body(funcs[name]) if opcode(t) != "NOP"]
        ops = Counter(opcode(t) for t in body)
        short = re.sub(r"_Z\d+(study_\w+?)(ILi(\d+)EE)?v?iii$", lambda m: m.group(1) + (m.group(3) or ""), name)
        if csv:
            print(f"{short},{len(body)},{len(body) / CODES_PER_LANE:.3f}")
        else:
            top = " ".join(f"{k}:{v}" for k, v in ops.most_common())
            print(f"{short:16s} loop {len(body):4d} instr/round/lane = {len(body) / CODES_PER_LANE:5.2f} per code | {top}")


if __name__ == "__main__":
    main()

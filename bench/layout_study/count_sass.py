#!/usr/bin/env python3
"""Counts the SASS instructions of the round loop of every kernel in a `cuobjdump -sass`
listing (bench/layout_study/decode_step.cu): the loop is the range from the target of the
last backward branch to that branch (the round loop is the only real loop: the inner
loops are unrolled), NOPs left out. Kernels are templates whose first argument is the
head_dim D (a lane decodes 16 * D / 32 codes per round); they are named by their template
arguments: study_b<128, 4> -> b_128_4. Prints per kernel the instructions per round per
lane, per code and the count by opcode (--csv: name,count,per_code). Usage:
    cuobjdump -sass decode_step.cubin | python3 count_sass.py [--csv]"""
import re
import sys
from collections import Counter



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


def short_name(mangled):
    """_Z7study_bILi128ELi4EEviii -> b_128_4; returns (name, D)."""
    m = re.match(r"_Z\d+study_(\w+?)I((?:Li\d+E)+)E", mangled)
    if not m:
        return mangled, None
    args = re.findall(r"Li(\d+)E", m.group(2))
    return m.group(1) + "_" + "_".join(args), int(args[0])


def main():
    csv = "--csv" in sys.argv
    funcs = parse(sys.stdin.read().splitlines())
    for name in sorted(funcs, key=lambda n: short_name(n)[0]):
        body = [t for t in loop_body(funcs[name]) if opcode(t) != "NOP"]
        ops = Counter(opcode(t) for t in body)
        short, D = short_name(name)
        codes = 16 * D // 32 if D else 32
        if csv:
            print(f"{short},{len(body)},{len(body) / codes:.4f}")
        else:
            top = " ".join(f"{k}:{v}" for k, v in ops.most_common())
            print(f"{short:14s} loop {len(body):4d} instr/round/lane = {len(body) / codes:5.2f} per code | {top}")


if __name__ == "__main__":
    main()

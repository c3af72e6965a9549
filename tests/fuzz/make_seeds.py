#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/{api,blob}).

Each seed is a small, meaningful program in the byte format the harness reads
(fuzz_input.h: values taken from the front of the input, little-endian). The raw-blob
seeds corpus/blob/raw-* are made by the harness itself from the blob seeds written
here:  PACKKV_FUZZ_DUMP_DIR=corpus/blob ./fuzz_blob -runs=0 corpus/blob
Usage: python3 tests/fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- fuzz_api opcodes (Program::step) and pick() indices ----
CREATE, DESTROY, APPEND = 0, 1, 2
SCORES, APPLY, DECODE, WORKSPACE, STATS, DECOMPRESS = 4, 5, 6, 7, 8, 9
REMOVE_RESET, PARAMS, STRINGS, BITS, SEQLEN = 10, 11, 12, 13, 14
DIMS = {32: 0, 48: 1, 64: 2, 128: 3, 256: 4, 80: 5}
BLOCKS = {16: 0, 32: 1, 64: 2, 128: 3, 256: 4}
RESID = {0: 0, 16: 1, 64: 2, 128: 3, 7: 4}
CAPS = {64: 0, 200: 1, 1000: 2, 5000: 3}
DTYPE_APPEND = {'f32': 0, 'f16': 1, 'bf16': 2, 'bad': 4}
CLASSES = ['gauss', 'const', 'zeros', 'subnormal', 'outlier', 'huge', 'fp16limit', 'nonfinite', 'mixed']


def create(slot=0, heads=1, dim=32, seqs=1, kv_dtype=0, cap=1000, sk=0, sv=1, bk=0, bv=0,
           repack=1, gran=0, block=16, resid=16):
    heads_i = {1: 0, 2: 1, 3: 2}[heads]
    return bytes([CREATE, slot, heads_i, DIMS[dim], seqs - 1, kv_dtype, CAPS[cap], sk, sv, bk, bv,
                  repack, gran, BLOCKS[block], RESID[resid], 0])


def append(slot, ids, counts, dtype='f32', cls='gauss', seed=1, nulls=0, max_seqs=1):
    b = bytes([APPEND, slot, len(ids) % (max_seqs + 2), 0]) + bytes(ids)
    b += b''.join(struct.pack('<H', c) for c in counts)
    return b + bytes([DTYPE_APPEND[dtype], CLASSES.index(cls)]) + struct.pack('<I', seed) + bytes([nulls])


def attention(op, slot, ids, heads_mult=0, q_dtype=0, ld_delta=3, nulls=0, seed=7, qcls=0, scale=0, max_seqs=1):
    b = bytes([op, slot, (len(ids) - 1) % (max_seqs + 1), 0]) + bytes(ids)
    b += bytes([heads_mult, q_dtype, ld_delta, 1, nulls]) + struct.pack('<I', seed) + bytes([qcls])
    if op == DECODE:
        b += bytes([scale])
    return b


def api_seeds():
    s = {}
    base = create(heads=2, dim=64, block=16, resid=16)
    s['roundtrip'] = base + append(0, [0], [100]) + attention(SCORES, 0, [0]) + \
        attention(APPLY, 0, [0]) + attention(DECODE, 0, [0]) + bytes([STATS, 0, 1, 0, 1]) + \
        bytes([DECOMPRESS, 0, 0, 0, 0]) + bytes([SEQLEN, 0, 0, 1])
    for cls in CLASSES:
        for dt in ('f32', 'f16', 'bf16'):
            s[f'append-{cls}-{dt}'] = create(dim=32, block=16, resid=0, kv_dtype=1 if dt == 'bf16' else 0) + \
                append(0, [0], [40], dtype=dt, cls=cls, seed=3) + attention(DECODE, 0, [0]) + \
                append(0, [0], [1], dtype=dt, cls=cls, seed=4)
    s['one-at-a-time'] = create(block=16, resid=0) + b''.join(append(0, [0], [1], seed=i) for i in range(40))
    s['batch'] = create(heads=2, dim=64, seqs=3, block=32, resid=16) + \
        append(0, [2, 0], [70, 33], max_seqs=3) + attention(DECODE, 0, [0, 2], heads_mult=1, max_seqs=3) + \
        bytes([REMOVE_RESET, 0, 1, 2]) + attention(SCORES, 0, [2, 0], max_seqs=3)
    s['capacity'] = create(cap=64, block=16, resid=0) + append(0, [0], [60]) + append(0, [0], [5]) + \
        append(0, [0], [4])
    s['bad-args'] = create() + append(0, [0], [10], dtype='bad') + append(0, [0], [10], nulls=1) + \
        attention(SCORES, 0, [0], ld_delta=0) + attention(APPLY, 0, [0], nulls=3) + \
        attention(DECODE, 0, [0], scale=3) + bytes([WORKSPACE, 0, 0, 4, 1]) + \
        bytes([STATS, 0, 9, 2, 1]) + bytes([DECOMPRESS, 0, 0, 2, 0]) + bytes([PARAMS, 0, 1, 1, 1]) + \
        bytes([STRINGS, 1, 0, 0, 0, 9]) + bytes([BITS, 1, 0, 0, 0x80, 0x7f, 1]) + bytes([DESTROY, 0]) + \
        append(0, [0], [10])
    s['gqa-greedy-per-head'] = create(heads=3, dim=128, block=64, resid=64, repack=2, gran=1, sk=3, sv=4) + \
        append(0, [0], [200], cls='outlier') + attention(DECODE, 0, [0], heads_mult=2, q_dtype=1) + \
        attention(SCORES, 0, [0], heads_mult=1, q_dtype=2)
    s['bits-1-and-8'] = create(dim=48, bk=3, bv=10, block=16, resid=0) + append(0, [0], [48], cls='mixed') + \
        attention(APPLY, 0, [0])
    return s


def blob_seeds():
    s = {}
    # mode 0: [0, heads, dim, block, bits_k-1, bits_v-1, repack/gran, rel scales, seed u32, class, ops...]
    configs = [(0, 0, 0, 3, 2, 1, 9), (1, 2, 3, 7, 0, 2, 1), (0, 14, 0, 4, 5, 4, 253), (2, 1, 1, 0, 7, 3, 20),
               (0, 6, 15, 3, 3, 0, 9), (1, 0, 1, 1, 1, 5, 2)]
    for i, cfg in enumerate(configs):
        for cls in range(8):
            s[f'enc-{i}-{cls}'] = bytes([0, *cfg]) + struct.pack('<I', 100 + i) + bytes([cls])
        # corruptions: flip, overwrite field, truncate, extend, tiles byte
        s[f'enc-{i}-flip'] = bytes([0, *cfg]) + struct.pack('<I', 7) + bytes([0, 0]) + struct.pack('<H', 9) + bytes([0x40])
        s[f'enc-{i}-field'] = bytes([0, *cfg]) + struct.pack('<I', 7) + bytes([0, 1, 0, 0]) + struct.pack('<I', 0xffff)
        s[f'enc-{i}-trunc'] = bytes([0, *cfg]) + struct.pack('<I', 7) + bytes([0, 2, 1, 0])
        s[f'enc-{i}-extend'] = bytes([0, *cfg]) + struct.pack('<I', 7) + bytes([0, 3, 4, 0])
        s[f'enc-{i}-lens'] = bytes([0, *cfg]) + struct.pack('<I', 7) + bytes([0, 4, 3, 0, 0xff])
    # mode 2: the same with compact zero points and scales (every value class: class 5,
    # huge values, makes wide fallback blocks); a corrupted compact field
    for i, cfg in enumerate(configs):
        for cls in range(8):
            s[f'zs16-{i}-{cls}'] = bytes([2, *cfg]) + struct.pack('<I', 100 + i) + bytes([cls])
        s[f'zs16-{i}-field'] = bytes([2, *cfg]) + struct.pack('<I', 7) + bytes([0, 1, 0, 0]) + struct.pack('<I', 0xffff)
    return s


def write(kind, seeds):
    d = os.path.join(HERE, 'corpus', kind)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    write('api', api_seeds())
    write('blob', blob_seeds())

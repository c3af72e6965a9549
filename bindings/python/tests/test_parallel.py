"""n_threads and the caller's task runner (issue 19): results are the same bits for any
thread count and through a Python-side ctypes runner (tasks run one after another)."""

import ctypes

import numpy as np
import pytest

import packkv
from conftest import kv_data


def fill(cache, rng):
    k, v = kv_data(rng, 3000, 2, 64), kv_data(rng, 3000, 2, 64)
    cache.append(k, v, 0)
    return rng.standard_normal((8, 64)).astype(np.float32)


def test_n_threads_param_and_same_bits(rng):
    outs = []
    for n in (1, 2, 0):
        with packkv.Cache(2, 64, n_threads=n, max_tokens_per_seq=4096) as c:
            assert c.params.n_threads == n
            q = fill(c, np.random.default_rng(7))
            outs.append(c.decode(q))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    with pytest.raises(packkv.InvalidArgument):
        packkv.Cache(2, 64, n_threads=-1)


TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32)
RUNNER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, TASK, ctypes.c_void_p)


def test_set_parallel_runs_on_the_callers_runner():
    calls = []

    def run(user, n_tasks, task, ctx):
        calls.append(n_tasks)
        for i in range(n_tasks):
            task(ctx, i)

    runner = RUNNER(run)  # kept alive while the cache uses it
    address = ctypes.cast(runner, ctypes.c_void_p).value
    with packkv.Cache(2, 64, n_threads=1, max_tokens_per_seq=4096) as ref, \
            packkv.Cache(2, 64, n_threads=1, max_tokens_per_seq=4096) as c:
        c.set_parallel(address, None, 4)
        q = fill(ref, np.random.default_rng(7))
        fill(c, np.random.default_rng(7))
        assert np.array_equal(c.decode(q), ref.decode(q))
        assert calls and max(calls) <= 4
        with pytest.raises(packkv.InvalidArgument):
            c.set_parallel(address, None, 0)
        c.set_parallel(None)  # back to the library's threads
        n = len(calls)
        assert np.array_equal(c.decode(q), ref.decode(q))
        assert len(calls) == n

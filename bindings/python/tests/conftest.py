"""Shared fixtures of the packkv Python tests.

The tests import the `packkv` package from PYTHONPATH: CTest points it at the package staged
in the CMake build tree (<build>/bindings/python/pkg); after `pip install ./bindings/python`
plain `pytest bindings/python/tests` works too.
"""

import numpy as np
import pytest

import packkv

# The tests' reference configuration, stated so that no test depends on the library's
# defaults (which follow measurements and change): r_K 0.1, r_V 0.2 (4- and 3-bit codes),
# residual window 128, no sink tokens.
REF = dict(rel_scale_k=0.1, rel_scale_v=0.2, residual_tokens=128, sink_tokens=0)


def ref_cache(*args, **kw):
    """packkv.Cache with REF, overridden by kw."""
    return packkv.Cache(*args, **{**REF, **kw})


def kv_data(rng, n_tokens, n_heads, head_dim, dtype=np.float16):
    """Synthetic K/V with per-token offsets and scales (like real post-RoPE K)."""
    base = rng.standard_normal((n_tokens, n_heads, head_dim))
    scale = rng.uniform(0.2, 3.0, size=(n_tokens, 1, 1))
    offset = rng.uniform(-1.0, 1.0, size=(n_tokens, 1, 1))
    return (base * scale + offset).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def cache():
    """A CPU cache: 3 KV heads, head_dim 64 (SmolLM2's shape), 4 sequences."""
    with ref_cache(n_kv_heads=3, head_dim=64, max_seqs=4) as c:
        yield c


def cuda_available():
    """True when both the library and torch see a CUDA device."""
    if not packkv.has_cuda():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()

"""packkv.hf with CUDA tensors (a CUDA cache per layer; sliding-window layers on transformers'
cache where this libpackkv has no CUDA sliding window): the tiny models give the CPU run's
logits, and generate runs with a padded batch. Skipped without a CUDA build and GPU."""

import pytest
import torch

import packkv
import packkv.hf as ph
from test_tiny_models import LOSSY, forward_chunks, ids

pytestmark = pytest.mark.skipif(not (packkv.has_cuda() and torch.cuda.is_available()),
                                reason="needs a CUDA build of libpackkv and a CUDA device")


def cuda_has_window() -> bool:
    """Whether this libpackkv has a sliding window on CUDA caches (else packkv.hf puts sliding
    layers on CUDA on transformers' DynamicSlidingWindowLayer)."""
    c = packkv.Cache(1, 32, device=torch.cuda.current_device())
    try:
        c.set_window(4)
        return True
    except packkv.NotSupported:
        return False
    finally:
        c.close()


def test_cuda_matches_cpu(tiny_model, monkeypatch):
    tokens = ids(60, b=2, seed=5)
    mask = torch.ones_like(tokens)
    mask[1, :11] = 0
    sizes = [40, 1, 19]
    with monkeypatch.context() as m:
        if not cuda_has_window():   # the CPU reference then falls back the same way
            def no_window(self, n):
                raise packkv.NotSupported(7, "no sliding window on CUDA caches (test)")
            m.setattr(packkv.Cache, "set_window", no_window)
        want = forward_chunks(tiny_model, ph.PackKVCache(tiny_model.config, **LOSSY), tokens,
                              sizes, mask)
    model = tiny_model.to("cuda")
    cache = ph.PackKVCache(model.config, **LOSSY)
    got = forward_chunks(model, cache, tokens.cuda(), sizes, mask.cuda())
    assert cache.packkv_layers[0].packkv.device == torch.cuda.current_device()
    torch.testing.assert_close(got.cpu(), want, atol=1e-3, rtol=0)


def test_cuda_generate_half_precision(tiny_model):
    model = tiny_model.to("cuda", torch.float16)
    tokens = ids(40, b=2, seed=6).cuda()
    mask = torch.ones_like(tokens)
    mask[0, :7] = 0
    cache = ph.PackKVCache(model.config, **LOSSY)
    out = model.generate(tokens, attention_mask=mask, max_new_tokens=8, do_sample=False,
                         pad_token_id=0, **ph.cache_argument(cache, model))
    assert out.shape == (2, 48) and out.is_cuda
    assert cache.packkv_layers[0].packkv.params.kv_dtype == packkv.DTYPE_F16
    assert cache.packkv_layers[0].packkv.seq_length(0) == 33 + 8 - 1

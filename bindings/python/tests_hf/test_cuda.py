"""packkv.hf with CUDA tensors (a CUDA cache per full-attention layer): the tiny models give the
CPU run's logits, and generate runs with a padded batch. Skipped without a CUDA build and GPU."""

import pytest
import torch

import packkv
import packkv.hf as ph
from test_tiny_models import LOSSY, forward_chunks, ids

pytestmark = pytest.mark.skipif(not (packkv.has_cuda() and torch.cuda.is_available()),
                                reason="needs a CUDA build of libpackkv and a CUDA device")


def test_cuda_matches_cpu(tiny_model):
    tokens = ids(60, b=2, seed=5)
    mask = torch.ones_like(tokens)
    mask[1, :11] = 0
    sizes = [40, 1, 19]
    want = forward_chunks(tiny_model, ph.PackKVCache(tiny_model.config, **LOSSY), tokens, sizes,
                          mask)
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

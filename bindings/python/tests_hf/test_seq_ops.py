"""Beam search, assisted decoding and batch selection on a packkv cache (issue 17 through the
sequence operations of issue 16: fork and truncate). Greedy outputs at 8-bit settings equal
DynamicCache's; logits after a crop or a batch operation equal those of a DynamicCache put
through the same operations (within the near-lossless tolerance), and each row's packkv
sequence holds exactly its real tokens."""

import copy

import pytest
import torch
from transformers import DynamicCache

import packkv.hf as ph
from conftest import tiny_gemma3, tiny_llama

# 8-bit codes (r = 1/254), small blocks so that blocks are compressed and cut; no sink
# tokens and with 4 of them (the sinks must survive fork and truncate)
FINE = dict(residual_tokens=16, block_tokens=16, rel_scale_k=1 / 254, rel_scale_v=1 / 254,
            sink_tokens=0)
FINE_SINKS = dict(FINE, sink_tokens=4, k_transform=1)


def ids(n, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 256, (b, n), generator=g)


def fwd(model, cache, tokens, mask=None):
    kw = {}
    if mask is not None:
        kw["attention_mask"] = mask
        kw["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, -tokens.shape[1]:]
    return model(input_ids=tokens, use_cache=True, **kw, **ph.cache_argument(cache)).logits


def full_layer(cache):
    """The first full-attention PackKVLayer (Gemma 3's first layer is a sliding one)."""
    return [x for x in cache.packkv_layers if not x.is_sliding][0]


def close(got, want):
    torch.testing.assert_close(got, want, atol=1e-2 * want.abs().max().item(), rtol=0)


@pytest.mark.parametrize("params", [FINE, FINE_SINKS], ids=["plain", "sinks+centring"])
@pytest.mark.parametrize("beams,batch", [(2, 1), (3, 2)])
def test_beam_search_matches_dynamic_cache(tiny_model, params, beams, batch):
    tokens = ids(45, b=batch, seed=1)
    mask = torch.ones_like(tokens)
    mask[-1, :7] = 0     # a padded row when batch > 1
    kw = dict(attention_mask=mask, num_beams=beams, max_new_tokens=14, do_sample=False,
              pad_token_id=0)
    want = tiny_model.generate(tokens, **kw, **ph.cache_argument(DynamicCache(config=tiny_model.config)))
    cache = ph.PackKVCache(tiny_model.config, **params)
    got = tiny_model.generate(tokens, **kw, **ph.cache_argument(cache))
    assert torch.equal(got, want)
    layer = full_layer(cache)
    assert layer.batch_size_ == batch * beams
    assert layer.packkv.stats().n_blocks > 0
    # the beams share blocks: the whole cache counts a shared block once
    per_row = sum(layer.packkv.stats(s).n_blocks for s in layer.rows)
    assert layer.packkv.stats().n_blocks < per_row


@pytest.mark.parametrize("params", [FINE, FINE_SINKS], ids=["plain", "sinks+centring"])
def test_assisted_decoding_matches_greedy(params, monkeypatch):
    """A random draft model: most drafted tokens are rejected, so crop() runs at every step."""
    model, draft = tiny_llama(seed=0), tiny_llama(n_layers=1, attn="sdpa", seed=5)
    tokens = ids(40, seed=2)
    want = model.generate(tokens, max_new_tokens=20, do_sample=False, pad_token_id=0,
                          **ph.cache_argument(DynamicCache(config=model.config)))
    crops = []
    real_crop = ph.PackKVLayer.crop
    monkeypatch.setattr(ph.PackKVLayer, "crop", lambda self, n: (crops.append(n), real_crop(self, n))[1])
    cache = ph.PackKVCache(model.config, **params)
    got = model.generate(tokens, max_new_tokens=20, do_sample=False, pad_token_id=0,
                         assistant_model=draft, **ph.cache_argument(cache))
    assert torch.equal(got, want)
    assert any(n < 0 for n in crops)
    layer = full_layer(cache)
    assert layer.packkv.seq_length(0) == layer.get_seq_length() == cache.get_seq_length()


@pytest.mark.parametrize("params", [FINE, FINE_SINKS], ids=["plain", "sinks+centring"])
def test_crop_of_a_padded_batch_matches_dynamic_cache(tiny_model, params):
    """crop(-n) after a padded prefill and a few steps: each row loses its real tokens of
    the cropped positions (some of them in compressed blocks, some padding). Gemma 3's
    sliding layers (window 8) have moved their window: their next queries would need freed
    tokens, so crop raises ValueError and changes nothing (test_sliding.py crops within a
    window)."""
    t = 50
    tokens = ids(t, b=2, seed=3)
    mask = torch.ones_like(tokens)
    mask[1, :12] = 0
    steps = ids(4, b=2, seed=4)
    for n_crop in (2, 4, 30, 54):
        cache = ph.PackKVCache(tiny_model.config, **params)
        sliding = [x for x in cache.packkv_layers if x.is_sliding]
        ref = DynamicCache(config=tiny_model.config)
        full_mask = torch.cat([mask, torch.ones_like(steps)], dim=1)
        for c in ((cache,) if sliding else (cache, ref)):
            fwd(tiny_model, c, tokens, mask)
            for i in range(4):
                fwd(tiny_model, c, steps[:, i:i + 1], full_mask[:, :t + i + 1])
        if sliding:
            before = [[x.packkv.seq_length(s) for s in x.rows] for x in cache.packkv_layers]
            with pytest.raises(ValueError, match="sliding-window layer whose window has moved"):
                cache.crop(-n_crop)
            assert cache.get_seq_length() == t + 4
            assert [[x.packkv.seq_length(s) for s in x.rows] for x in cache.packkv_layers] == before
            continue
        for c in (cache, ref):
            c.crop(-n_crop)
        keep = t + 4 - n_crop
        layer = full_layer(cache)
        assert cache.get_seq_length() == keep
        real = full_mask[:, :keep].sum(1).tolist()
        assert [layer.packkv.seq_length(s) for s in layer.rows] == real
        nxt = ids(3, b=2, seed=5)
        m2 = torch.cat([full_mask[:, :keep], torch.ones_like(nxt)], dim=1)
        close(fwd(tiny_model, cache, nxt, m2), fwd(tiny_model, ref, nxt, m2))


def test_batch_select_and_repeat_match_dynamic_cache(tiny_model):
    tokens = ids(40, b=2, seed=6)
    cache, ref = ph.PackKVCache(tiny_model.config, **FINE_SINKS), DynamicCache(config=tiny_model.config)
    for c in (cache, ref):
        fwd(tiny_model, c, tokens)
        c.batch_repeat_interleave(2)                  # 4 rows: a larger packkv cache
        c.batch_select_indices(torch.tensor([3, 0, 0]))   # 3 rows, one of them twice
    layer = full_layer(cache)
    assert layer.batch_size_ == 3 and layer.packkv.params.max_seqs == 4
    nxt = ids(5, b=3, seed=7)
    close(fwd(tiny_model, cache, nxt), fwd(tiny_model, ref, nxt))
    assert [layer.packkv.seq_length(s) for s in layer.rows] == [45, 45, 45]


@pytest.mark.parametrize("params", [FINE, FINE_SINKS])
def test_deepcopy_reuses_a_prompt(tiny_model, params):
    """transformers' prompt reuse: copy.deepcopy of a cache after the prompt, then continue
    the copy and the original. Both give the logits of one cache fed prompt + continuation
    (the same compressed bytes: exactly equal), and continuing one leaves the other as it was."""
    g = torch.Generator().manual_seed(11)
    prompt, cont = torch.randint(3, 256, (1, 45), generator=g), torch.randint(3, 256, (1, 12), generator=g)
    ref = ph.PackKVCache(tiny_model.config, **params)
    tiny_model(input_ids=prompt, use_cache=True, **ph.cache_argument(ref))
    want = tiny_model(input_ids=cont, use_cache=True, **ph.cache_argument(ref)).logits
    cache = ph.PackKVCache(tiny_model.config, **params)
    tiny_model(input_ids=prompt, use_cache=True, **ph.cache_argument(cache))
    dup = copy.deepcopy(cache)
    got = tiny_model(input_ids=cont, use_cache=True, **ph.cache_argument(dup)).logits
    assert torch.equal(got, want)
    assert cache.get_seq_length() == 45 and dup.get_seq_length() == 57
    for a, b in zip(cache.packkv_layers, dup.packkv_layers):
        assert a.packkv is not b.packkv
        assert a.packkv.seq_length(a.rows[0]) <= 45
    again = tiny_model(input_ids=cont, use_cache=True, **ph.cache_argument(cache)).logits
    assert torch.equal(again, want)

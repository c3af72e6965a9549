"""packkv.hf on the real models of examples/python/hf_models.py (SmolLM2-135M-Instruct; Gemma 3
270M: 15 sliding-window layers (window 512) and 3 global layers, all on packkv): with 8-bit
settings (r = 1/254 for K and V, 16-token blocks and window, so that most of the prompt is
compressed) greedy decoding gives DynamicCache's tokens; a left-padded batch gives every row
exactly the tokens it gets alone (padding is never stored).

(8-bit is not lossless: the logits move by up to ~1 (SmolLM2 ~0.4) on a scale of ~40, so a
greedy step whose top-2 logits are closer than that can flip; the second prompt has such a
step on Gemma 3 (margin 0.02), hence the batch test compares packkv with packkv, up to the
first step whose margin is below TIE: with all 18 Gemma 3 layers compressed, the second
prompt's 9th step has a margin of 0.002, where the batch's float rounding decides.)"""

import os

import pytest
import torch
from transformers import DynamicCache

import hf_models
import packkv.hf as ph
from conftest import REPO

FINE = dict(residual_tokens=16, block_tokens=16, rel_scale_k=1 / 254, rel_scale_v=1 / 254)
NEW_TOKENS = 12
TIE = 0.01


@pytest.fixture(scope="module", params=hf_models.MODELS)
def model_and_tokenizer(request):
    return hf_models.load(request.param, attn_implementation=ph.register())


def prompts():
    with open(os.path.join(REPO, "data", "kjv_genesis.txt"), encoding="utf-8") as f:
        text = f.read()
    return [text[:700], text[2000:2400]]


def greedy(model, enc, cache):
    out = model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False,
                         pad_token_id=model.generation_config.pad_token_id or 0,
                         **ph.cache_argument(cache))
    return out[:, enc["input_ids"].shape[1]:]


def test_greedy_tokens_match_dynamic_cache(model_and_tokenizer):
    model, tok = model_and_tokenizer
    enc = tok(prompts()[0], return_tensors="pt")
    assert enc["input_ids"].shape[1] > 100
    want = greedy(model, enc, DynamicCache(config=model.config))
    cache = ph.PackKVCache(model.config, **FINE)
    got = greedy(model, enc, cache)
    assert got.tolist() == want.tolist()
    st = [x for x in cache.packkv_layers if not x.is_sliding][0].packkv.stats()
    assert st.n_compressed_tokens >= enc["input_ids"].shape[1] - 32    # mostly compressed


def test_padded_batch_rows_match_single_prompts(model_and_tokenizer):
    model, tok = model_and_tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(prompts(), return_tensors="pt", padding=True)
    assert not enc["attention_mask"].all()
    got = greedy(model, enc, ph.PackKVCache(model.config, **FINE))
    for row, text in enumerate(prompts()):
        e = tok(text, return_tensors="pt")
        out = model.generate(**e, max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=model.generation_config.pad_token_id or 0,
                             output_scores=True, return_dict_in_generate=True,
                             **ph.cache_argument(ph.PackKVCache(model.config, **FINE)))
        alone = out.sequences[0, e["input_ids"].shape[1]:].tolist()
        # up to the first near-tie step (top-2 logits closer than TIE), where float noise
        # (the batch's projections sum in another order; a last-bit K/V change can move an
        # 8-bit code) may pick the other token
        top2 = torch.stack(out.scores)[:, 0].topk(2, dim=-1).values
        ties = ((top2[:, 0] - top2[:, 1]) < TIE).nonzero()
        k = int(ties[0]) if len(ties) else NEW_TOKENS
        assert k >= 4
        assert got[row].tolist()[:k] == alone[:k]


def test_beam_search_matches_dynamic_cache(model_and_tokenizer):
    """num_beams=2 (reorder_cache -> packkv fork every step) gives DynamicCache's tokens."""
    model, tok = model_and_tokenizer
    enc = tok(prompts()[0], return_tensors="pt")
    kw = dict(max_new_tokens=8, num_beams=2, do_sample=False,
              pad_token_id=model.generation_config.pad_token_id or 0)
    want = model.generate(**enc, **kw, **ph.cache_argument(DynamicCache(config=model.config)))
    cache = ph.PackKVCache(model.config, **FINE)
    got = model.generate(**enc, **kw, **ph.cache_argument(cache))
    assert got.tolist() == want.tolist()
    assert cache.packkv_layers[0].batch_size_ == 2


def test_gemma3_greedy_beyond_its_sliding_window_matches_dynamic_cache():
    """Gemma 3 270M with a prompt longer than its 512-token window: the 15 sliding layers'
    packkv windows move during the prefill and at every new token (the tests above stay
    inside the window). 8-bit settings give DynamicCache's greedy tokens (whose sliding layers
    are transformers' DynamicSlidingWindowLayer) up to the first near-tie step; every sliding
    layer holds the window of W - 1 tokens, every full layer the whole sequence."""
    model, tok = hf_models.load("gemma3", attn_implementation=ph.register())
    w = model.config.sliding_window
    with open(os.path.join(REPO, "data", "kjv_genesis.txt"), encoding="utf-8") as f:
        ids = tok(f.read()[:6000], return_tensors="pt")["input_ids"][:, :w + 100]
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    kw = dict(max_new_tokens=NEW_TOKENS, do_sample=False,
              pad_token_id=model.generation_config.pad_token_id or 0)
    ref = model.generate(**enc, **kw, output_scores=True, return_dict_in_generate=True,
                         **ph.cache_argument(DynamicCache(config=model.config), model))
    want = ref.sequences[0, ids.shape[1]:].tolist()
    cache = ph.PackKVCache(model.config, **FINE)
    got = model.generate(**enc, **kw, **ph.cache_argument(cache, model))[0, ids.shape[1]:]
    top2 = torch.stack(ref.scores)[:, 0].topk(2, dim=-1).values
    ties = ((top2[:, 0] - top2[:, 1]) < TIE).nonzero()
    k = int(ties[0]) if len(ties) else NEW_TOKENS
    assert k >= 4
    assert got.tolist()[:k] == want[:k]
    n = ids.shape[1] + NEW_TOKENS - 1          # the last new token is never stored
    sliding = [x for x in cache.packkv_layers if x.is_sliding]
    assert len(sliding) == 15 and w == 512
    for layer in sliding:
        assert layer.packkv.seq_length(0) == n
        assert layer.packkv.window_start(0) == n - (w - 1)
    for layer in cache.packkv_layers:
        if not layer.is_sliding:
            assert layer.packkv.stats().n_tokens == n

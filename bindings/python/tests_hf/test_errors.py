"""What packkv.hf refuses, and how: every unsupported operation raises with a message naming
it, and a refused call leaves the cache as it was. (Beam search, crop and batch selection
work: test_seq_ops.py.)"""

import os
import subprocess
import sys

import pytest
import torch
from transformers import DynamicCache

import packkv.hf as ph
from conftest import tiny_gemma3, tiny_llama


def ids(n, b=1):
    return torch.randint(3, 256, (b, n), generator=torch.Generator().manual_seed(7))


def prefilled(model, n=20, b=1):
    cache = ph.PackKVCache(model.config, residual_tokens=16, block_tokens=16)
    model(input_ids=ids(n, b), use_cache=True, **ph.cache_argument(cache))
    return cache


def test_model_without_packkv_attention_is_refused():
    model = tiny_llama(attn="sdpa")
    with pytest.raises(ValueError, match="attn_implementation=packkv.hf.register"):
        ph.PackKVCache(model.config)


def test_switching_the_attention_away_is_caught_at_the_next_forward():
    model = tiny_llama()
    cache = ph.PackKVCache(model.config)
    model.set_attn_implementation("sdpa")
    model(input_ids=ids(5), use_cache=True, **ph.cache_argument(cache))
    with pytest.raises(RuntimeError, match="never attended"):
        model(input_ids=ids(1), use_cache=True, **ph.cache_argument(cache))


def test_num_return_sequences_works_on_an_empty_cache():
    """generate() expands the batch before the prefill: nothing to fork then."""
    model = tiny_llama()
    cache = ph.PackKVCache(model.config)
    out = model.generate(ids(10), do_sample=True, num_return_sequences=2, max_new_tokens=3,
                         **ph.cache_argument(cache))
    assert out.shape == (2, 13)
    assert cache.packkv_layers[0].packkv.seq_length(1) == 12


def test_bad_crop_and_batch_indices_change_nothing():
    cache = prefilled(tiny_llama(), b=2)
    layer = cache.packkv_layers[0]
    before = (cache.get_seq_length(), layer.packkv.seq_length(0), layer.packkv.seq_length(1))
    with pytest.raises(ValueError, match="removes 21 positions, the cache holds 20"):
        cache.crop(-21)
    for bad in ([0, 2], [-1], []):
        with pytest.raises(ValueError, match="batch indices"):
            cache.batch_select_indices(torch.tensor(bad, dtype=torch.long))
    assert (cache.get_seq_length(), layer.packkv.seq_length(0), layer.packkv.seq_length(1)) == before


def test_batch_size_change_is_refused():
    model = tiny_llama()
    cache = prefilled(model, b=2)
    with pytest.raises(ValueError, match="batch size 1"):
        model(input_ids=ids(1, b=1), use_cache=True, **ph.cache_argument(cache))


def test_custom_4d_mask_is_refused():
    model = tiny_llama()
    cache = ph.PackKVCache(model.config)
    mask = torch.ones(1, 1, 6, 6, dtype=torch.bool).tril()
    with pytest.raises(NotImplementedError, match="custom attention masks"):
        model(input_ids=ids(6), attention_mask=mask, use_cache=True, **ph.cache_argument(cache))


def test_softcapping_is_refused():
    from transformers import Gemma2Config, Gemma2ForCausalLM
    cfg = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                       attn_logit_softcapping=30.0, sliding_window=8)
    model = Gemma2ForCausalLM(cfg).eval()
    model.set_attn_implementation(ph.ATTN_IMPLEMENTATION)
    cache = ph.PackKVCache(model.config)
    with pytest.raises(NotImplementedError, match="softcapping"):
        model(input_ids=ids(4), use_cache=True, **ph.cache_argument(cache))


def test_dynamic_cache_memory_counts_sliding_layers():
    model = tiny_gemma3()
    cache = DynamicCache(config=model.config)
    model(input_ids=ids(20), use_cache=True, **ph.cache_argument(cache))
    mem = ph.cache_memory(cache)
    full = 2 * 2 * 20 * 32 * 4
    assert mem["packkv_bytes"] == 0 and mem["tensor_bytes"] > full


def test_packkv_imports_without_transformers():
    """`import packkv` never needs torch or transformers; packkv.hf says what is missing."""
    code = ("import sys; sys.modules['transformers'] = None\n"
            "import packkv\n"
            "try:\n    import packkv.hf\nexcept ImportError as e:\n    print('ERR', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERR packkv.hf needs torch and transformers" in r.stdout


def test_parameters_are_checked_at_construction():
    """fresh-findings F3: a bad parameter fails when the PackKVCache is created, with the
    library's error, not deep inside the first forward."""
    import packkv
    model = tiny_llama()
    with pytest.raises(TypeError, match="'no_such_param'"):
        ph.PackKVCache(model.config, no_such_param=2)
    for name in ("n_kv_heads", "head_dim", "max_seqs", "device"):
        with pytest.raises(TypeError, match=f"'{name}' is not a parameter: it comes from the first forward"):
            ph.PackKVCache(model.config, **{name: 1})
    with pytest.raises(packkv.InvalidArgument, match="sink_tokens"):
        ph.PackKVCache(model.config, sink_tokens=-1)
    with pytest.raises(packkv.InvalidArgument, match="rel_scale_k"):
        ph.PackKVCache(model.config, rel_scale_k=2.0)
    with pytest.raises(packkv.InvalidArgument, match="n_threads"):
        ph.PackKVCache(model.config, n_threads=-1)
    with pytest.raises(packkv.InvalidArgument, match="repack"):
        ph.PackKVCache(model.config, repack="sorted")
    # K centring needs a float16 residual window: refused for an explicit bfloat16 one
    with pytest.raises(packkv.NotSupported, match="PACKKV_DTYPE_F16"):
        ph.PackKVCache(model.config, k_transform=1, kv_dtype="bfloat16")
    # the model's own shape: head_dim 16 is not a packkv shape
    from transformers import LlamaConfig
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)
    cfg._attn_implementation = ph.ATTN_IMPLEMENTATION
    with pytest.raises(packkv.InvalidArgument, match="head_dim"):
        ph.PackKVCache(cfg)
    # good parameters (n_threads included) work as before
    cache = ph.PackKVCache(model.config, n_threads=2, sink_tokens=0, k_transform=1)
    model(input_ids=ids(10), use_cache=True, **ph.cache_argument(cache))
    p = cache.packkv_layers[0].packkv.params
    assert (p.n_threads, p.sink_tokens, p.k_transform) == (2, 0, 1)

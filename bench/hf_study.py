#!/usr/bin/env python3
"""End-to-end study of packkv.hf against the caches Hugging Face users have (issue 17, item 4).

What it measures, for one model (SmolLM2-135M-Instruct from its GGUF, or a tiny random Llama
with --tiny for a self-test), on one device (a CUDA GPU, or the CPU for a smoke run):

1. Perplexity (phase "ppl"): the first max(--contexts) tokens of --text (KJV Genesis) read
   through each cache at batch 1 in forwards of --ppl-chunk tokens, every position scored.
   A packkv cache cuts each forward at its flush points (packkv.hf), so its queries see the
   cache as token-by-token decoding would; the other caches see their own state after the
   previous forward (each keeps the newest tokens of a forward exact until then). Reported
   per context T (the predictions of tokens 1..T-1: a causal model's first T predictions do
   not depend on later tokens, so one run at the longest context gives every shorter one) and
   per slice [T_prev, T), with the change against DynamicCache and its standard error (paired
   per-token NLL differences), and the top-1 agreement with DynamicCache's predictions.
   SmolLM2 is trained to 8192 tokens: beyond that every cache, DynamicCache included, is
   outside the model's training context.
2. Memory and decode speed (phase "speed"), for each (context T, batch B, cache): the cache is
   filled with the K/V that DynamicCache holds after the perplexity run (the first T tokens,
   the same K/V in every batch row), through each cache's own store path (update() for the
   transformers caches, PackKVLayer.load() for packkv: the same compression as a prefill),
   then the model decodes --warmup + --decode-steps greedy tokens per row, timed after the
   warm-up steps (CUDA synchronized). Memory held: the bytes the cache objects hold (packkv's
   stats: compressed blocks + residual windows; the tensors of the other caches, quantized
   data, scales and residual tensors, each storage counted once), the change of
   torch.cuda.memory_allocated, the change of the device's free memory (cudaMemGetInfo:
   includes packkv's own device allocations, which torch does not see), and the peak of
   torch's allocations while decoding (transient copies such as dequantized K/V).
   Every byte count also comes as for a float16 model (held_bytes_fp16_model: float32
   tensors counted at 2 bytes per element), for CPU runs of a float32 model.
3. Equal perplexity (tables only): for each cache that is neither DynamicCache nor packkv,
   the packkv caches whose perplexity is at most 1% above its own (each pair at the longest
   context both runs reached) and the smallest of them by bytes held per token.

Caches (--caches): dynamic (transformers DynamicCache, the model's dtype: fp16), packkv
(packkv.hf.PackKVCache, the library's default parameters), packkv-small (--packkv-small
parameters, fewer bytes), more packkv caches named by --packkv-set NAME:k=v,..., fp8 (K/V stored as float8_e4m3fn with one float32 scale per token
and head, amax / 448; defined here: every token stored in fp8, the whole layer dequantized
for attention at every step, no fused kernel), quanto-int4 / quanto-int2 / hqq-int4 /
hqq-int2 (transformers QuantizedCache with optimum-quanto / HQQ at transformers' defaults:
q_group_size 64, residual_length 128, axis 0; present only when those packages import).
optimum-quanto's C++/CUDA extensions (compiled at first use: minutes of nvcc for its
marlin/awq kernels) are not built: quanto's own pure-torch implementation of its unpack
operator runs instead (the KV cache path needs no other quanto kernel).

Order and the time budget: the DynamicCache perplexity run first (its K/V fill the speed
cells), then the speed cells at the longest context for dynamic and packkv, then the other
perplexity runs, then the remaining speed cells from the longest context down. No case
starts after --time-budget seconds (counted from the start of the script); a perplexity run
stops where the budget ends, or after its share (each run after DynamicCache's gets an equal
share of the time left, one share being kept for the speed cells unless --no-speed), and
reports the contexts it reached. Every case runs in try/except: an error (out of memory
included) is recorded and the study goes on; after an out-of-memory error a cache skips the
larger batches of that context.

Output: --out DIR gets hf_study.json (every number, the environment, errors),
hf_study.md (tables) and hf_study.png (perplexity change vs bytes held; decode tokens/s vs
batch). Progress goes to stdout.

Examples::

    # the GPU study (bench/hf_study_device.sh runs this on the device machine)
    PYTHONPATH=<build>/bindings/python/pkg python3 bench/hf_study.py \\
        --gguf <dir>/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT --time-budget 330
    # CPU smoke run of the whole script with a tiny random model (seconds; CTest
    # python_hf_study runs it with --strict)
    PYTHONPATH=build-cpu/bindings/python/pkg python3 bench/hf_study.py --tiny --device cpu \\
        --contexts 256,512 --batches 1,2 --decode-steps 4 --out hfs-out
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - T0:7.1f} s] {msg}", flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--gguf", help="GGUF file of the model (transformers loads it with gguf)")
    src.add_argument("--model-dir", help="a transformers checkpoint directory")
    src.add_argument("--tiny", action="store_true",
                     help="a tiny random Llama and random tokens (self-test of the script)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--text", default=os.path.join(REPO, "data", "kjv_genesis.txt"))
    ap.add_argument("--contexts", default="4096,8192,16384,32768")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--caches", default="dynamic,packkv,packkv-small,fp8,quanto-int4,"
                    "quanto-int2,hqq-int4,hqq-int2")
    ap.add_argument("--packkv-small", default="rel_scale_k=0.1,rel_scale_v=0.2",
                    help="packkv parameters of the packkv-small cache (k=v,...)")
    ap.add_argument("--packkv-set", action="append", default=[], metavar="NAME:k=v,...",
                    help="one more packkv cache, named NAME (must start with 'packkv-'), with "
                    "these parameters (a key 'sliding.KEY' sets KEY for the sliding-window "
                    "layers only: PackKVCache's sliding_params); added to --caches and "
                    "--ppl-caches (repeatable)")
    ap.add_argument("--ppl-chunk", type=int, default=64, help="tokens per forward, perplexity")
    ap.add_argument("--ppl-caches", default=None,
                    help="caches of the perplexity phase (default: --caches)")
    ap.add_argument("--no-speed", action="store_true",
                    help="perplexity only (no memory / decode-speed cells); for models with "
                    "sliding-window layers, whose DynamicCache K/V cannot fill the speed cells")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=330.0,
                    help="seconds from the start after which no case starts")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's)")
    ap.add_argument("--out", default="hf-study-out")
    ap.add_argument("--strict", action="store_true",
                    help="exit status 1 if any case failed or was skipped (self-tests)")
    return ap.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# fp8 storage, defined here
# ---------------------------------------------------------------------------------------------

def make_fp8_cache(config):
    """A transformers Cache storing K/V as float8_e4m3fn, one float32 scale per (row, head,
    token) = amax over head_dim / 448 (e4m3's largest finite value); update() stores the new
    tokens in fp8 and returns the whole layer dequantized to the model's dtype (the current
    tokens too: every token the attention sees went through fp8)."""
    import torch
    from transformers.cache_utils import Cache, DynamicLayer

    f8 = torch.float8_e4m3fn

    def quant(x):
        s = (x.float().abs().amax(dim=-1, keepdim=True) / 448.0).clamp_min(1e-12)
        return (x.float() / s).to(f8), s

    class Fp8Layer(DynamicLayer):
        def lazy_initialization(self, key_states, value_states):
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self.keys = torch.empty((b, h, 0, d), dtype=f8, device=self.device)
            self.values = torch.empty((b, h, 0, d), dtype=f8, device=self.device)
            self.k_scale = torch.empty((b, h, 0, 1), dtype=torch.float32, device=self.device)
            self.v_scale = torch.empty((b, h, 0, 1), dtype=torch.float32, device=self.device)
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            kq, ks = quant(key_states)
            vq, vs = quant(value_states)
            self.keys = torch.cat([self.keys, kq], dim=-2)
            self.values = torch.cat([self.values, vq], dim=-2)
            self.k_scale = torch.cat([self.k_scale, ks], dim=-2)
            self.v_scale = torch.cat([self.v_scale, vs], dim=-2)
            return ((self.keys.float() * self.k_scale).to(self.dtype),
                    (self.values.float() * self.v_scale).to(self.dtype))

    class Fp8Cache(Cache):
        def __init__(self, config):
            text = config.get_text_config(decoder=True)
            super().__init__(layers=[Fp8Layer() for _ in range(text.num_hidden_layers)])

    return Fp8Cache(config)


# ---------------------------------------------------------------------------------------------
# Optional packages (quanto, HQQ)
# ---------------------------------------------------------------------------------------------

def import_optional() -> dict:
    """Imports optimum-quanto (without its CUDA extension) and HQQ; returns name -> version or
    the error text."""
    found = {}
    for ext in ("cpp", "cuda", "hip", "mps"):   # quanto's pure-torch kernels (docstring)
        name = f"optimum.quanto.library.extensions.{ext}"
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    try:
        import optimum.quanto  # noqa: F401
        from importlib.metadata import version
        found["optimum-quanto"] = version("optimum-quanto")
    except Exception as e:  # noqa: BLE001
        found["optimum-quanto"] = f"not available: {type(e).__name__}: {e}"
    try:
        import hqq  # noqa: F401
        from importlib.metadata import version
        found["hqq"] = version("hqq")
    except Exception as e:  # noqa: BLE001
        found["hqq"] = f"not available: {type(e).__name__}: {e}"
    return found


# ---------------------------------------------------------------------------------------------
# The caches
# ---------------------------------------------------------------------------------------------

def parse_params(text: str) -> dict:
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        k, v = item.split("=", 1)
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def packkv_sets(args) -> dict:
    """NAME -> parameters of each --packkv-set NAME:k=v,..."""
    out = {}
    for item in args.packkv_set:
        name, _, params = item.partition(":")
        if not name.startswith("packkv-") or name == "packkv-small" or not params:
            raise SystemExit(f"--packkv-set {item!r}: expected NAME:k=v,... with NAME starting "
                             "with 'packkv-' (not packkv-small)")
        out[name] = parse_params(params)
    return out


class Caches:
    """Makes each cache of the study for the model, switching the model's attention
    implementation (packkv for the packkv caches, sdpa for the others)."""

    def __init__(self, model, args):
        import packkv.hf as ph
        self.ph = ph
        self.model = model
        self.packkv_name = ph.register()
        self.sets = {"packkv": {}, "packkv-small": parse_params(args.packkv_small)}
        self.sets.update(packkv_sets(args))

    def params(self, name: str) -> dict:
        """The parameters of a cache, for the record."""
        if name == "packkv":
            return {"library defaults": True}
        if name in self.sets:
            return dict(self.sets[name])
        if name.startswith(("quanto", "hqq")):
            return {"nbits": int(name[-1]), "q_group_size": 64, "residual_length": 128,
                    "axis_key": 0, "axis_value": 0}
        if name == "fp8":
            return {"dtype": "float8_e4m3fn", "scale": "float32 per row, head and token"}
        return {}

    def make(self, name: str):
        from transformers import DynamicCache, QuantizedCache
        m = self.model
        if name in self.sets:
            m.set_attn_implementation(self.packkv_name)
            p = self.sets[name]
            sliding = {k[len("sliding."):]: v for k, v in p.items() if k.startswith("sliding.")}
            return self.ph.PackKVCache(m.config, sliding_params=sliding or None,
                                       **{k: v for k, v in p.items() if not k.startswith("sliding.")})
        m.set_attn_implementation("sdpa")
        if name == "dynamic":
            return DynamicCache(config=m.config)
        if name == "fp8":
            return make_fp8_cache(m.config)
        for backend in ("quanto", "hqq"):
            if name.startswith(backend + "-int"):
                return QuantizedCache(backend=backend, config=m.config, nbits=int(name[-1]))
        raise ValueError(f"unknown cache {name!r}")

    def arg(self, cache) -> dict:
        return self.ph.cache_argument(cache, self.model)


def held_bytes(cache) -> dict:
    """Bytes the cache objects hold: packkv layers by packkv's stats, every other layer by
    the tensors reachable from its attributes (tensor subclasses such as quanto's through
    their inner tensors), each storage once. packkv_fp16_bytes: the tokens packkv holds, K
    and V, as fp16. held_bytes_fp16_model: held_bytes with every float32 tensor counted at 2
    bytes per element, what the same cache holds for a float16 model (the CPU runs use a
    float32 model: DynamicCache's K/V, QuantizedCache's scales, zero points and residual
    tensors and fp8's scales then are float32; packkv's residual window is float16 either
    way, packkv.hf's kv_dtype)."""
    import torch
    import packkv.hf as ph
    seen, total, packkv_b, fp16, f32 = set(), 0, 0, 0, 0

    def walk(x, depth=0):
        nonlocal total, f32
        if depth > 6:
            return
        if isinstance(x, torch.Tensor):
            if hasattr(x, "__tensor_flatten__") and type(x) is not torch.Tensor:
                names, _ = x.__tensor_flatten__()
                for n in names:
                    walk(getattr(x, n), depth + 1)
                return
            try:
                key = (x.untyped_storage().data_ptr(), x.device)
                nbytes = x.untyped_storage().nbytes()
            except Exception:  # noqa: BLE001
                key, nbytes = (id(x), None), x.numel() * x.element_size()
            if key not in seen:
                seen.add(key)
                total += nbytes
                if x.dtype == torch.float32:
                    f32 += nbytes
        elif isinstance(x, dict):
            for v in x.values():
                walk(v, depth + 1)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, depth + 1)
        elif hasattr(x, "__dict__") and not isinstance(x, (type, types.ModuleType)) and \
                type(x).__module__.split(".")[0] in ("optimum", "hqq"):
            walk(vars(x), depth + 1)

    for layer in cache.layers:
        if isinstance(layer, ph.PackKVLayer):
            st = layer.memory()
            packkv_b += st.get("compressed_bytes_used", 0) + st.get("residual_bytes", 0)
            fp16 += st.get("fp16_bytes", 0)
        else:
            walk({k: v for k, v in vars(layer).items()})
    return {"held_bytes": total + packkv_b, "packkv_bytes": packkv_b, "tensor_bytes": total,
            "packkv_fp16_bytes": fp16, "held_bytes_fp16_model": total - f32 // 2 + packkv_b}


def close(cache) -> None:
    if hasattr(cache, "close"):
        try:
            cache.close()
        except Exception:  # noqa: BLE001
            pass


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------

class Study:
    def __init__(self, args):
        import torch
        self.torch = torch
        self.args = args
        self.dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.cuda = self.dev.type == "cuda"
        self.dtype = getattr(torch, args.dtype)
        self.contexts = sorted(int(x) for x in args.contexts.split(",") if x)
        self.batches = sorted(int(x) for x in args.batches.split(",") if x)
        self.cache_names = [x for x in args.caches.split(",") if x]
        self.ppl_names = [x for x in (args.ppl_caches or args.caches).split(",") if x]
        for name in packkv_sets(args):
            for names in (self.cache_names, self.ppl_names):
                if name not in names:
                    names.append(name)
        self.deadline = T0 + args.time_budget
        self.result = {"meta": {}, "ppl": [], "speed": [], "errors": [], "skipped": [],
                       "notes": []}
        self.dyn_nll = None
        self.dyn_top1 = None
        self.src_kv = None

    # -- helpers -------------------------------------------------------------------------------
    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)

    def clean(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize(self.dev)
            self.torch.cuda.empty_cache()

    def left(self) -> float:
        return self.deadline - time.time()

    def error(self, case: dict, exc: BaseException):
        text = f"{type(exc).__name__}: {exc}"
        oom = isinstance(exc, self.torch.OutOfMemoryError) or "out of memory" in str(exc).lower() \
            or "OutOfDeviceMemory" in type(exc).__name__
        rec = dict(case, error=text[:2000], oom=bool(oom),
                   traceback=traceback.format_exc()[-3000:])
        self.result["errors"].append(rec)
        log(f"ERROR {case}: {text[:300]}")
        return oom

    # -- setup ---------------------------------------------------------------------------------
    def load(self):
        torch, args = self.torch, self.args
        import transformers
        import packkv
        meta = self.result["meta"]
        meta.update({
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "host": platform.node(), "python": sys.version.split()[0],
            "torch": torch.__version__, "transformers": transformers.__version__,
            "packkv": packkv.__version__, "packkv_has_cuda": packkv.has_cuda(),
            "packkv_build": getattr(packkv, "build_info", lambda: "")(),
            "commit": os.environ.get("PACKKV_COMMIT", ""),
            "device": str(self.dev), "dtype": args.dtype, "args": vars(args),
        })
        if self.cuda:
            p = torch.cuda.get_device_properties(self.dev)
            meta["gpu"] = p.name
            meta["gpu_memory_bytes"] = p.total_memory
        meta["optional"] = import_optional()
        n_need = self.contexts[-1] + args.warmup + args.decode_steps + 2
        t = time.time()
        if args.tiny:
            from transformers import LlamaConfig, LlamaForCausalLM
            torch.manual_seed(0)
            cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              head_dim=32, max_position_embeddings=1 << 16, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2)
            model = LlamaForCausalLM(cfg)
            g = torch.Generator().manual_seed(1)
            ids = torch.randint(3, 512, (n_need,), generator=g)
            meta["model"] = "tiny random Llama (2 layers, 2 KV heads x 32)"
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer
            if args.gguf:
                d, f = os.path.dirname(os.path.abspath(args.gguf)), os.path.basename(args.gguf)
                tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
                log(f"tokenizer loaded ({time.time() - t:.1f} s)")
                model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=self.dtype)
                meta["model"] = f
            else:
                tok = AutoTokenizer.from_pretrained(args.model_dir)
                model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=self.dtype)
                meta["model"] = args.model_dir
            with open(args.text, encoding="utf-8") as fh:
                ids = torch.tensor(tok(fh.read())["input_ids"])
            meta["text"] = os.path.relpath(args.text, REPO)
            meta["text_tokens"] = int(ids.numel())
            if ids.numel() < n_need:
                raise SystemExit(f"--text has {ids.numel()} tokens, the study needs {n_need}")
        model = model.to(device=self.dev, dtype=self.dtype).eval()
        meta["load_s"] = round(time.time() - t, 2)
        c = model.config
        meta["config"] = {k: getattr(c, k, None) for k in (
            "model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "hidden_size", "max_position_embeddings", "vocab_size")}
        self.model = model
        self.ids = ids[:n_need].to(self.dev)
        self.caches = Caches(model, args)
        log(f"model {meta['model']} on {self.dev} ({args.dtype}), {meta['load_s']} s; "
            f"optional: {meta['optional']}")
        if c.max_position_embeddings and self.contexts[-1] > c.max_position_embeddings:
            meta["note_context"] = (f"the model is trained to {c.max_position_embeddings} tokens; "
                                    "longer contexts are outside its training context for "
                                    "every cache")

    # -- perplexity ----------------------------------------------------------------------------
    def ppl(self, name: str, cap: float | None = None):
        """One perplexity run; it stops at the time budget or after `cap` seconds."""
        torch, args = self.torch, self.args
        n = self.contexts[-1]
        case = {"phase": "ppl", "cache": name, "tokens": n}
        stop_at = self.deadline if cap is None else min(self.deadline, time.time() + cap)
        if self.left() <= 0:
            self.result["skipped"].append(dict(case, reason="time budget"))
            log(f"skip {case}: time budget")
            return
        log(f"ppl {name}: {n} tokens, forwards of {args.ppl_chunk}")
        cache = None
        try:
            self.clean()
            cache = self.caches.make(name)
            kw = self.caches.arg(cache)
            ids = self.ids[:n].view(1, n)
            nll = torch.empty(n - 1, dtype=torch.float32, device=self.dev)
            top1 = torch.empty(n - 1, dtype=torch.long, device=self.dev)
            pos, stopped = 0, False
            self.sync()
            t = time.time()
            with torch.no_grad():
                while pos < n:
                    if time.time() >= stop_at:
                        stopped = True
                        break
                    m = min(args.ppl_chunk, n - pos)
                    logits = self.model(input_ids=ids[:, pos:pos + m], use_cache=True,
                                        **kw).logits[0].float()
                    k = min(m, n - 1 - pos)
                    if k > 0:
                        lp = torch.log_softmax(logits[:k], dim=-1)
                        nll[pos:pos + k] = -lp.gather(1, ids[0, pos + 1:pos + 1 + k, None])[:, 0]
                        top1[pos:pos + k] = logits[:k].argmax(-1)
                    pos += m
            self.sync()
            secs = time.time() - t
            rec = dict(case, reached=pos, stopped_by_budget=stopped,
                       cap_s=None if cap is None else round(cap, 1), seconds=round(secs, 2),
                       prefill_tokens_per_s=round(pos / secs, 1) if secs > 0 else None,
                       params=self.caches.params(name), **held_bytes(cache))
            got = nll[:max(pos - 1, 0)].double().cpu()
            pred = top1[:max(pos - 1, 0)].cpu()
            if name == "dynamic":
                self.dyn_nll, self.dyn_top1 = got, pred
                self.src_kv = [(layer.keys, layer.values) for layer in cache.layers]
                rec["note"] = "its K/V fill the speed cells"
            rec["contexts"] = self.per_context(got, pred)
            self.result["ppl"].append(rec)
            summary = ", ".join(f"{c['context']}: {c['ppl']:.4f}" for c in rec["contexts"]
                                if c.get("ppl") is not None)
            log(f"ppl {name}: {summary} ({secs:.1f} s, held {rec['held_bytes'] / 2**20:.1f} MiB)")
        except Exception as e:  # noqa: BLE001
            self.error(case, e)
        finally:
            if cache is not None and name != "dynamic":
                close(cache)
            del cache
            self.clean()

    def per_context(self, nll, pred) -> list:
        """Perplexity of the first T predictions' tokens and of each slice [T_prev, T)."""
        out, prev = [], 0
        for ctx in self.contexts:
            k = ctx - 1
            rec = {"context": ctx}
            if nll.numel() < k:
                rec["ppl"] = None
                rec["note"] = f"not reached ({nll.numel() + 1} tokens)"
                out.append(rec)
                continue
            rec["ppl"] = math.exp(float(nll[:k].mean()))
            rec["slice"] = [prev, ctx]
            rec["slice_ppl"] = math.exp(float(nll[prev:k].mean()))
            if self.dyn_nll is not None and self.dyn_nll.numel() >= k:
                d = nll[:k] - self.dyn_nll[:k]
                ref = float(self.dyn_nll[:k].mean())
                rec["delta_ppl_pct"] = 100.0 * (math.exp(float(nll[:k].mean()) - ref) - 1.0)
                rec["delta_ppl_se_pct"] = 100.0 * float(d.std()) / math.sqrt(k)
                rec["top1_agree"] = float((pred[:k] == self.dyn_top1[:k]).double().mean())
                ds = nll[prev:k] - self.dyn_nll[prev:k]
                rec["slice_delta_ppl_pct"] = 100.0 * (math.exp(float(ds.mean())) - 1.0)
            out.append(rec)
            prev = ctx
        return out

    # -- memory and decode speed ---------------------------------------------------------------
    def fill(self, cache, t: int, b: int):
        import packkv.hf as ph
        for i, (k, v) in enumerate(self.src_kv):
            k = k[:, :, :t].expand(b, -1, -1, -1)
            v = v[:, :, :t].expand(b, -1, -1, -1)
            layer = cache.layers[i]
            if isinstance(layer, ph.PackKVLayer):
                layer.load(k, v)
            else:
                cache.update(k.contiguous(), v.contiguous(), i)

    def speed(self, name: str, t: int, b: int) -> str:
        """One speed cell; returns "ok", "oom", "error" or "skipped"."""
        torch, args = self.torch, self.args
        case = {"phase": "speed", "cache": name, "context": t, "batch": b}
        if self.left() <= 0:
            self.result["skipped"].append(dict(case, reason="time budget"))
            return "skipped"
        if self.src_kv is None or self.src_kv[0][0].shape[-2] < t:
            self.result["skipped"].append(dict(case, reason="no DynamicCache K/V of that many "
                                               "tokens to fill from"))
            return "skipped"
        cache = None
        status = "ok"
        try:
            self.clean()
            alloc0 = torch.cuda.memory_allocated(self.dev) if self.cuda else 0
            free0 = torch.cuda.mem_get_info(self.dev)[0] if self.cuda else 0
            cache = self.caches.make(name)
            kw = self.caches.arg(cache)
            self.sync()
            t1 = time.time()
            with torch.no_grad():
                self.fill(cache, t, b)
            self.sync()
            fill_s = time.time() - t1
            self.clean()
            rec = dict(case, params=self.caches.params(name), fill_s=round(fill_s, 3),
                       **held_bytes(cache))
            rec["fp16_kv_bytes"] = sum(2 * k[:, :, :t].numel() * 2 * b for k, _ in self.src_kv)
            if self.cuda:
                rec["torch_alloc_delta"] = torch.cuda.memory_allocated(self.dev) - alloc0
                rec["device_free_delta"] = free0 - torch.cuda.mem_get_info(self.dev)[0]
                torch.cuda.reset_peak_memory_stats(self.dev)
            tok = self.ids[t:t + 1].view(1, 1).expand(b, 1).contiguous()
            with torch.no_grad():
                for _ in range(args.warmup):
                    tok = self.model(input_ids=tok, use_cache=True, **kw).logits[:, -1].argmax(
                        -1, keepdim=True)
                self.sync()
                t2 = time.time()
                for _ in range(args.decode_steps):
                    tok = self.model(input_ids=tok, use_cache=True, **kw).logits[:, -1].argmax(
                        -1, keepdim=True)
                self.sync()
            secs = time.time() - t2
            rec["decode_s"] = round(secs, 4)
            rec["ms_per_step"] = round(1000 * secs / args.decode_steps, 3)
            rec["tokens_per_s"] = round(b * args.decode_steps / secs, 1)
            if self.cuda:
                rec["decode_peak_torch_alloc_delta"] = torch.cuda.max_memory_allocated(self.dev) - alloc0
            self.result["speed"].append(rec)
            log(f"speed {name} T={t} B={b}: {rec['tokens_per_s']} tok/s "
                f"({rec['ms_per_step']} ms/step), held {rec['held_bytes'] / 2**20:.1f} MiB "
                f"(fp16 {rec['fp16_kv_bytes'] / 2**20:.1f}), fill {fill_s:.2f} s")
        except Exception as e:  # noqa: BLE001
            status = "oom" if self.error(case, e) else "error"
        finally:
            if cache is not None:
                close(cache)
            del cache
            self.clean()
        return status

    def speed_grid(self, names, contexts, batches, done: set):
        for t in contexts:
            for name in names:
                for b in batches:
                    if (name, t, b) in done:
                        continue
                    done.add((name, t, b))
                    if any(name == n and t == tt and b > bb for n, tt, bb in self.oom):
                        self.result["skipped"].append({"phase": "speed", "cache": name,
                                                       "context": t, "batch": b,
                                                       "reason": "a smaller batch ran out of memory"})
                        continue
                    if self.speed(name, t, b) == "oom":
                        self.oom.append((name, t, b))

    # -- the whole study -------------------------------------------------------------------------
    def run(self):
        self.load()
        self.oom = []
        done: set = set()
        longest = self.contexts[-1]
        if "dynamic" in self.ppl_names or "dynamic" in self.cache_names:
            self.ppl("dynamic")
        speed = not self.args.no_speed
        first = [n for n in ("dynamic", "packkv") if n in self.cache_names and speed]
        self.speed_grid(first, [longest], [self.batches[0], self.batches[-1]], done)
        rest = [x for x in self.ppl_names if x != "dynamic"]
        for i, name in enumerate(rest):   # each run gets an equal share of what is left,
            self.ppl(name, cap=self.left() / (len(rest) - i + int(speed)))   # one for speed
        if rest:
            self.result["notes"].append(
                "each perplexity run after DynamicCache's stops after an equal share of the "
                "time left (one share kept for the speed cells); 'reached' says how far it got")
        if speed:
            self.speed_grid(self.cache_names, [longest], [self.batches[0], self.batches[-1]],
                            done)
            self.speed_grid(self.cache_names, self.contexts[::-1], self.batches, done)
        self.result["meta"]["total_s"] = round(time.time() - T0, 1)

    def write(self):
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "hf_study.json"), "w") as fh:
            json.dump(self.result, fh, indent=1, default=str)
        try:
            text = markdown(self.result)
        except Exception:  # noqa: BLE001 - the JSON above has every number anyway
            text = "# hf_study: the tables failed\n\n```\n" + traceback.format_exc() + "```\n"
        with open(os.path.join(self.args.out, "hf_study.md"), "w") as fh:
            fh.write(text)
        try:
            plot(self.result, os.path.join(self.args.out, "hf_study.png"))
        except Exception as e:  # noqa: BLE001
            log(f"no plot: {type(e).__name__}: {e}")
        log(f"wrote {self.args.out}/hf_study.json, hf_study.md, hf_study.png")


def mib(x) -> str:
    return "" if x is None else f"{x / 2**20:.1f}"


def plot(r: dict, path: str) -> None:
    """Left: perplexity change against DynamicCache vs bytes held per element, at the longest
    context every perplexity run reached; right: decode tokens/s vs batch at the longest
    context of the speed cells (log scales)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    cfg = r["meta"].get("config", {})
    per_tok = 2 * cfg.get("num_hidden_layers", 1) * cfg.get("num_key_value_heads", 1) * (
        cfg.get("head_dim") or cfg.get("hidden_size", 64) // cfg.get("num_attention_heads", 1))
    runs = [p for p in r["ppl"] if any(c.get("delta_ppl_pct") is not None for c in p["contexts"])]
    if runs:
        t = min(max(c["context"] for c in p["contexts"] if c.get("delta_ppl_pct") is not None)
                for p in runs)
        for p in runs:
            c = next(c for c in p["contexts"] if c["context"] == t)
            x = p.get("held_bytes_fp16_model", p["held_bytes"]) / (per_tok * p["reached"])
            a.errorbar(x, c["delta_ppl_pct"], yerr=c["delta_ppl_se_pct"], fmt="o", capsize=3)
            a.annotate(p["cache"], (x, c["delta_ppl_pct"]), textcoords="offset points",
                       xytext=(5, 5), fontsize=8)
        a.axhline(1.0, color="grey", lw=0.8, ls="--")
        a.set_yscale("symlog", linthresh=1.0)
        a.set_xlabel("bytes held per K/V element, float16 model (end of the perplexity run)")
        a.set_ylabel(f"perplexity change vs DynamicCache, % (first {t} tokens)")
        a.grid(alpha=0.3)
    if r["speed"]:
        t = max(s["context"] for s in r["speed"])
        for name in dict.fromkeys(s["cache"] for s in r["speed"]):
            pts = sorted((s["batch"], s["tokens_per_s"]) for s in r["speed"]
                         if s["cache"] == name and s["context"] == t)
            if pts:
                b.plot(*zip(*pts), marker="o", label=name)
        b.set_xscale("log", base=2)
        batches = sorted({s["batch"] for s in r["speed"]})
        b.set_xticks(batches, [str(x) for x in batches])
        b.set_yscale("log")
        b.set_xlabel("batch")
        b.set_ylabel(f"decode tokens/s at context {t}")
        b.grid(alpha=0.3, which="both")
        b.legend(fontsize=8)
    m = r["meta"]
    fig.suptitle(f"packkv.hf end to end: {m.get('model')} on {m.get('gpu', m.get('device'))}, "
                 f"{m.get('dtype')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(r: dict) -> list:
    """At the longest context measured for speed: each cache's perplexity change (at that
    context, or the longest its run reached), its held bytes per fp16 byte, and decode tokens/s
    against DynamicCache's at each batch."""
    t = max(s["context"] for s in r["speed"])
    cells = {(s["cache"], s["batch"]): s for s in r["speed"] if s["context"] == t}
    batches = sorted({b for _, b in cells})
    lines = [f"## Headline at T={t}", "",
             "| cache | Δppl % (at T) | fp16 bytes / held bytes (fp16 model) | " +
             " | ".join(f"tok/s B={b} (x dynamic)" for b in batches) + " |",
             "|---|---|---|" + "---|" * len(batches)]
    for name in dict.fromkeys([p["cache"] for p in r["ppl"]] + [c for c, _ in cells]):
        p = next((p for p in r["ppl"] if p["cache"] == name), None)
        d = ""
        if p:
            got = [c for c in p["contexts"] if c.get("delta_ppl_pct") is not None]
            at = [c for c in got if c["context"] == t] or got[-1:]
            d = (f"{at[0]['delta_ppl_pct']:+.2f} (T={at[0]['context']})" if at else "")
        any_cell = next((cells[(name, b)] for b in batches if (name, b) in cells), None)
        held16 = any_cell and any_cell.get("held_bytes_fp16_model", any_cell.get("held_bytes"))
        ratio = f"{any_cell['fp16_kv_bytes'] / held16:.2f}" if held16 else ""
        speeds = []
        for b in batches:
            c, ref = cells.get((name, b)), cells.get(("dynamic", b))
            speeds.append("" if c is None else f"{c['tokens_per_s']}" + (
                f" ({c['tokens_per_s'] / ref['tokens_per_s']:.2f})" if ref else ""))
        lines.append(f"| {name} | {d} | {ratio} | " + " | ".join(speeds) + " |")
    return lines + [""]


def equal_perplexity(r: dict, tol_pct: float = 1.0) -> list:
    """The issue's criterion: for each cache Q that is neither DynamicCache nor packkv, the
    packkv caches P whose perplexity is at most tol_pct % above Q's, each pair compared at the
    longest context both runs reached (runs stop at their share of the time budget), and the
    smallest of them (bytes held per token at the end of each perplexity run, float16-model
    bytes); also the smallest P whose perplexity is not above Q's at all."""
    runs = {p["cache"]: p for p in r["ppl"]
            if any(c.get("ppl") is not None for c in p["contexts"])}

    def longest(p):
        return max(c["context"] for c in p["contexts"] if c.get("ppl") is not None)

    def ppl_at(p, t):
        return next((c["ppl"] for c in p["contexts"]
                     if c["context"] == t and c.get("ppl") is not None), None)

    def per_token(p):
        return p.get("held_bytes_fp16_model", p["held_bytes"]) / max(p["reached"], 1)

    lines = [f"## Equal perplexity (within {tol_pct:g}%): bytes held, float16 model", "",
             "Per other cache Q: the packkv caches whose perplexity is at most "
             f"{tol_pct:g}% above Q's (each compared at the longest context T both runs "
             "reached), the smallest of them, and the smallest packkv cache not above Q's "
             "perplexity at all; bytes per token held at the end of each perplexity run.", "",
             "| Q | longest T | Q's ppl | Q's bytes/token | packkv caches within | smallest: "
             "T, its ppl vs Q's, bytes/token | x smaller | smallest at ppl <= Q's | x smaller |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, q in runs.items():
        if name == "dynamic" or name.startswith("packkv"):
            continue
        lq, b = longest(q), per_token(q)
        pairs = {}
        for n, p in runs.items():
            if n.startswith("packkv"):
                t = min(lq, longest(p))
                pairs[n] = (t, ppl_at(p, t), ppl_at(q, t), per_token(p))
        cells = []
        for tol in (tol_pct, 0.0):
            ok = {n: v for n, v in pairs.items() if v[1] <= v[2] * (1 + tol / 100)}
            if ok:
                n = min(ok, key=lambda n: ok[n][3])
                t, pp, pq, pb = ok[n]
                cells.append((ok, f"{n} (T={t}: {pp:.4f} vs {pq:.4f}, {pb:.0f})", f"{b / pb:.2f}"))
            else:
                cells.append(({}, "none", ""))
        lines.append(f"| {name} | {lq} | {ppl_at(q, lq):.4f} | {b:.0f} | "
                     f"{', '.join(cells[0][0]) or 'none'} | {cells[0][1]} | {cells[0][2]} | "
                     f"{cells[1][1]} | {cells[1][2]} |")
    return lines + [""]


def markdown(r: dict) -> str:
    m = r["meta"]
    lines = [f"# hf_study: {m.get('model')} on {m.get('gpu', m.get('device'))}", "",
             f"{m.get('date_utc')} UTC; torch {m.get('torch')}, transformers "
             f"{m.get('transformers')}, packkv {m.get('packkv')} (CUDA: {m.get('packkv_has_cuda')}), "
             f"commit {m.get('commit') or '?'}; {m.get('dtype')}; optional: {m.get('optional')}; "
             f"total {m.get('total_s')} s.", ""]
    if m.get("note_context"):
        lines += [f"Note: {m['note_context']}.", ""]
    ctxs = sorted({c["context"] for p in r["ppl"] for c in p["contexts"]})
    if r["ppl"]:
        lines += ["## Perplexity (batch 1, first T tokens of the text)", "",
                  "| cache | " + " | ".join(f"T={c}: ppl (Δ% ± se, top-1)" for c in ctxs)
                  + " | held MiB at end | B/elem | B/elem, fp16 model | tok/s of the chunked pass |",
                  "|---|" + "---|" * (len(ctxs) + 4)]
        for p in r["ppl"]:
            cells = []
            for c in p["contexts"]:
                if c.get("ppl") is None:
                    cells.append("not reached")
                elif "delta_ppl_pct" in c:
                    cells.append(f"{c['ppl']:.4f} ({c['delta_ppl_pct']:+.2f}% ± "
                                 f"{c['delta_ppl_se_pct']:.2f}, {c['top1_agree']:.3f})")
                else:
                    cells.append(f"{c['ppl']:.4f}")
            n_elem = None
            cfg = m.get("config", {})
            try:
                n_elem = (2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"]
                          * (cfg["head_dim"] or cfg["hidden_size"] // cfg["num_attention_heads"])
                          * p["reached"])
            except Exception:  # noqa: BLE001
                pass
            bpe = f"{p['held_bytes'] / n_elem:.3f}" if n_elem else ""
            bpe16 = (f"{p.get('held_bytes_fp16_model', p['held_bytes']) / n_elem:.3f}"
                     if n_elem else "")
            lines.append(f"| {p['cache']} | " + " | ".join(cells) +
                         f" | {mib(p['held_bytes'])} | {bpe} | {bpe16} | "
                         f"{p.get('prefill_tokens_per_s')} |")
        lines.append("")
        lines += equal_perplexity(r)
    if r["ppl"] and r["speed"]:
        lines += headline(r)
    if r["speed"]:
        lines += ["## Memory and decode speed (cache filled with T tokens of DynamicCache's K/V "
                  "in every row)", "",
                  "| T | B | cache | tok/s | ms/step | held MiB | fp16 MiB | x smaller (fp16 model) | "
                  "torch Δ MiB | device Δ MiB | decode peak Δ MiB | fill s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in sorted(r["speed"], key=lambda s: (s["context"], s["batch"], s["cache"])):
            held16 = s.get("held_bytes_fp16_model", s.get("held_bytes"))
            ratio = s["fp16_kv_bytes"] / held16 if held16 else 0
            lines.append(f"| {s['context']} | {s['batch']} | {s['cache']} | {s['tokens_per_s']} | "
                         f"{s['ms_per_step']} | {mib(s['held_bytes'])} | {mib(s['fp16_kv_bytes'])} | "
                         f"{ratio:.2f} | {mib(s.get('torch_alloc_delta'))} | "
                         f"{mib(s.get('device_free_delta'))} | "
                         f"{mib(s.get('decode_peak_torch_alloc_delta'))} | {s['fill_s']} |")
        lines.append("")
    if r["errors"]:
        lines += ["## Errors", ""] + [f"- {e.get('phase')} {e.get('cache', '')} "
                                      f"{e.get('context', e.get('tokens', ''))} "
                                      f"B={e.get('batch', 1)}: {e.get('error', '')[:300]}"
                                      for e in r["errors"]] + [""]
    if r["skipped"]:
        lines += ["## Skipped", ""] + [f"- {s}" for s in r["skipped"]] + [""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    study = Study(args)
    try:
        study.run()
    except BaseException as e:  # noqa: BLE001 - still write what was measured
        study.error({"phase": "setup"}, e)
        study.result["meta"]["total_s"] = round(time.time() - T0, 1)
        study.write()
        if isinstance(e, KeyboardInterrupt):
            raise
        return 1
    study.write()
    if args.strict and (study.result["errors"] or study.result["skipped"]):
        log(f"--strict: {len(study.result['errors'])} errors, "
            f"{len(study.result['skipped'])} skipped")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

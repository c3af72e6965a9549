"""torch tensors: CPU tensors on a CPU cache (skipped without torch), CUDA tensors on a CUDA
cache (skipped without a CUDA device visible to both torch and libpackkv)."""

import math

import numpy as np
import pytest

import packkv
from conftest import REF, cuda_available, kv_data, ref_cache

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA device for packkv + torch")


def test_cpu_tensors_match_numpy(rng):
    k, v = kv_data(rng, 500, 3, 64), kv_data(rng, 500, 3, 64)
    q = rng.standard_normal((9, 64)).astype(np.float32)
    with ref_cache(3, 64) as a, ref_cache(3, 64) as b:
        a.append(k, v)
        b.append(torch.from_numpy(k), torch.from_numpy(v))
        out_t = b.decode(torch.from_numpy(q))
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
        np.testing.assert_array_equal(out_t.numpy(), a.decode(q))
        np.testing.assert_array_equal(b.scores(torch.from_numpy(q)).numpy(), a.scores(q))


def test_cpu_bfloat16_tensors(rng):
    k = torch.from_numpy(kv_data(rng, 300, 3, 64, np.float32)).to(torch.bfloat16)
    v = torch.from_numpy(kv_data(rng, 300, 3, 64, np.float32)).to(torch.bfloat16)
    with ref_cache(3, 64, kv_dtype=torch.bfloat16) as c:
        c.append(k, v)
        kh, _ = c.decompress()
        n = c.stats().n_compressed_tokens
        np.testing.assert_array_equal(kh[n:], k[n:].float().numpy())


def test_cpu_tensor_errors(cache):
    k = torch.zeros((4, 3, 64), dtype=torch.float16)
    with pytest.raises(packkv.InvalidArgument, match="contiguous"):
        cache.append(k.transpose(0, 1).contiguous().transpose(0, 1), k)
    with pytest.raises(packkv.InvalidArgument, match="dtype"):
        cache.append(k.to(torch.int32), k.to(torch.int32))


@needs_cuda
def test_cuda_cache_matches_cpu_cache(rng):
    T = 700
    k, v = kv_data(rng, T, 3, 64), kv_data(rng, T, 3, 64)
    q = rng.standard_normal((2, 9, 64)).astype(np.float16)
    dev = torch.device("cuda", 0)
    with ref_cache(3, 64, max_seqs=2) as cpu, \
            ref_cache(3, 64, max_seqs=2, device=0) as gpu:
        assert gpu.device == 0
        for c, conv in ((cpu, lambda x: x), (gpu, lambda x: torch.from_numpy(x).to(dev))):
            c.append(conv(np.concatenate([k, k[:100]])), conv(np.concatenate([v, v[:100]])),
                     seq_ids=[0, 1], n_tokens=[T, 100])
        gpu.sync()
        # Same encoder output -> same token accounting and (up to fp32 rounding of the
        # dequantization) the same reconstruction.
        sg, sc = gpu.stats(), cpu.stats()
        for f in ("n_tokens", "n_compressed_tokens", "n_residual_tokens", "n_blocks",
                  "k_tile_bytes", "v_tile_bytes", "fp16_bytes"):
            assert getattr(sg, f) == getattr(sc, f), f
        kg, vg = gpu.decompress(0)
        assert kg.is_cuda
        kc, vc = cpu.decompress(0)
        np.testing.assert_allclose(kg.cpu().numpy(), kc, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(vg.cpu().numpy(), vc, rtol=1e-6, atol=1e-6)
        qg = torch.from_numpy(q).to(dev)
        out_g, lse_g = gpu.decode(qg, seq_ids=[0, 1], return_lse=True)
        out_c, lse_c = cpu.decode(q, seq_ids=[0, 1], return_lse=True)
        torch.cuda.synchronize()
        np.testing.assert_allclose(out_g.cpu().numpy(), out_c, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lse_g.cpu().numpy(), lse_c, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gpu.scores(qg, seq_ids=[0, 1]).cpu().numpy(),
                                   cpu.scores(q, seq_ids=[0, 1]), rtol=1e-4, atol=1e-4)
        probs = np.full((2, 9, T), 1.0 / T, np.float32)
        np.testing.assert_allclose(
            gpu.apply(torch.from_numpy(probs).to(dev), seq_ids=[0, 1]).cpu().numpy(),
            cpu.apply(probs, seq_ids=[0, 1]), rtol=1e-4, atol=1e-5)


@needs_cuda
def test_cuda_explicit_stream_and_workspace(rng):
    dev = torch.device("cuda", 0)
    k = torch.from_numpy(kv_data(rng, 300, 3, 64)).to(dev)
    torch.cuda.synchronize()
    with ref_cache(3, 64, device=0) as c:
        s = torch.cuda.Stream(device=dev)
        with torch.cuda.stream(s):
            c.append(k, k)  # torch's current stream is s
        c.append(k, k, stream=s)
        s.synchronize()
        assert c.seq_length(0) == 600
        q = torch.randn(9, 64, device=dev)
        n = c.workspace_size(1, 9)
        ws = torch.empty(max(n, 1), dtype=torch.uint8, device=dev)
        out = c.decode(q, workspace=ws, stream=s.cuda_stream)
        s.synchronize()
        assert out.shape == (9, 64) and torch.isfinite(out).all()
        if n > 0:
            small = torch.empty(n - 1, dtype=torch.uint8, device=dev)
            with pytest.raises(packkv.WorkspaceTooSmall) as ei:
                c.decode(q, workspace=small)
            assert ei.value.message


@needs_cuda
def test_cuda_errors(rng):
    dev = torch.device("cuda", 0)
    with ref_cache(3, 64, device=0) as c:
        host = kv_data(rng, 10, 3, 64)
        with pytest.raises(packkv.InvalidArgument, match="CUDA device 0"):
            c.append(host, host)  # host memory on a CUDA cache
        bad = torch.from_numpy(host).to(dev)
        bad[3, 0, 0] = float("inf")
        # Detected inside the kernels and reported by append itself or, at the latest, by
        # the next synchronizing call.
        with pytest.raises(packkv.InvalidArgument) as ei:
            c.append(bad, bad)
            c.sync()
        assert ei.value.message
    with pytest.raises(packkv.InvalidArgument):
        ref_cache(3, 64, device=10_000)
    with ref_cache(3, 64) as cpu:
        with pytest.raises(packkv.InvalidArgument, match="host memory"):
            cpu.decode(torch.zeros(9, 64, device=dev))


@needs_cuda
def test_cuda_cache_in_device_pool_fork_truncate_export(rng):
    """A CUDA cache in a device pool (budget), then fork, truncate and export / import: the
    same values as a CPU cache doing the same; the export is the CPU's bytes."""
    T = 900
    k, v = kv_data(rng, T, 3, 64), kv_data(rng, T, 3, 64)
    dev = torch.device("cuda", 0)
    page = packkv.page_bytes_for(n_kv_heads=3, head_dim=64, **REF)
    with packkv.Pool(page_bytes=page, budget_bytes=64 * page, device=0) as pool, \
            ref_cache(3, 64, max_seqs=3) as cpu, ref_cache(3, 64, max_seqs=3, device=0, pool=pool) as gpu:
        assert gpu.pool is pool and pool.stats().n_caches == 1
        cpu.append(k, v)
        gpu.append(torch.from_numpy(k).to(dev), torch.from_numpy(v).to(dev))
        for c in (cpu, gpu):
            c.fork(0, 1)
            c.truncate(1, 333)  # inside a block: it returns to the window
        assert cpu.export_seq(1) == gpu.export_seq(1) and cpu.export_seq(0) == gpu.export_seq(0)
        gpu.import_seq(2, cpu.export_seq(1))
        for s in (0, 1, 2):
            kg, vg = gpu.decompress(s)
            kc, vc = cpu.decompress(min(s, 1))
            np.testing.assert_array_equal(kg.cpu().numpy(), kc)
            np.testing.assert_array_equal(vg.cpu().numpy(), vc)
        assert 0 < pool.stats().bytes_in_use <= pool.stats().budget_bytes

// GPU test suite (label gpu): the CUDA backend against the CPU backend, through the
// public C API. Checks identical compressed bytes (every block of every sequence),
// identical decompression, and scores / apply / decode within 1e-5 relative (fp32
// accumulation in both, different summation orders), plus stats, non-finite input
// reporting, empty sequences and shapes/bit widths/dtypes across the supported range.
// The main returns 77 (CTest skip) when no CUDA device is present.
#define DOCTEST_CONFIG_IMPLEMENT
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gpu_pair.h"
#include "api/cache_impl.h"
#include "api/internal_access.h"
#include "format/shape.h"
#include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace {

using namespace gpu_test;

// Prefill of different lengths, then decode steps crossing several flushes.
// Forces one attention kernel family (PACKKV_CUDA_ATTN_FAMILY, read on every call) for
// its lifetime; unset again on destruction, also when a REQUIRE throws.
struct ForceFamily {
  explicit ForceFamily(const char* fam) { REQUIRE(setenv("PACKKV_CUDA_ATTN_FAMILY", fam, 1) == 0); }
  ~ForceFamily() { unsetenv("PACKKV_CUDA_ATTN_FAMILY"); }
  ForceFamily(const ForceFamily&) = delete;
  ForceFamily& operator=(const ForceFamily&) = delete;
};

void run_scenario(const Shape& s, unsigned seed, int decode_steps = 70) {
  std::mt19937 rng(seed);
  Pair p(s);
  std::vector<int32_t> ids, counts;
  for (int q = 0; q < s.seqs; ++q) {
    ids.push_back(q);
    counts.push_back(q == 0 ? 1000 : 37 + 301 * q);
  }
  p.append(ids, counts, rng);
  p.check_all(rng);
  for (int step = 0; step < decode_steps; ++step) {
    std::vector<int32_t> ones(ids.size(), 1);
    p.append(ids, ones, rng);
  }
  p.check_all(rng);
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("defaults: H=2 D=64 GQA 2, median, fp16 window, f32 input") {
    Shape s;
    run_scenario(s, 1);
  }
  TEST_CASE("paper shape: H=4 D=128, GQA 4, fp16 input and queries") {
    Shape s;
    s.heads = 4; s.dim = 128; s.q_heads = 16; s.seqs = 3;
    s.in_dtype = PACKKV_DTYPE_F16; s.q_dtype = PACKKV_DTYPE_F16;
    run_scenario(s, 2);
  }
  TEST_CASE("SmolLM2 shape: H=3 D=64 GQA 3, per-token-head scales, no repack") {
    Shape s;
    s.heads = 3; s.dim = 64; s.q_heads = 9; s.seqs = 2;
    s.gran = PACKKV_SCALE_PER_TOKEN_HEAD; s.repack = PACKKV_REPACK_NONE;
    run_scenario(s, 3);
  }
  TEST_CASE("head_dim 256, 8 bits, bf16 window, MHA, GQA 12") {
    Shape s;
    s.heads = 1; s.dim = 256; s.q_heads = 12; s.seqs = 2;
    s.rk = 0.004f; s.rv = 0.01f; s.bits_k = 8; s.bits_v = 8;
    s.kv_dtype = PACKKV_DTYPE_BF16;
    run_scenario(s, 4, 20);
  }
  TEST_CASE("odd head_dims and narrow codes: D=48 (1..2 bits), D=80, D=32, f32 window") {
    for (int d : {48, 80, 32}) {
      Shape s;
      s.heads = 2; s.dim = d; s.q_heads = 2; s.seqs = 2;
      s.rk = 0.9f; s.rv = 0.6f; s.bits_k = d == 48 ? 1 : 2; s.bits_v = 2;
      s.kv_dtype = PACKKV_DTYPE_F32;
      CAPTURE(d);
      run_scenario(s, 5 + d, 10);
    }
  }
  TEST_CASE("block 32, residual 0, bits 5 and 6, GQA 8") {
    Shape s;
    s.heads = 2; s.dim = 96; s.q_heads = 16; s.seqs = 3; s.block = 32; s.residual = 0;
    s.rk = 0.05f; s.rv = 0.03f; s.bits_k = 5; s.bits_v = 6;
    run_scenario(s, 6, 40);
  }
  TEST_CASE("long residual windows: more 16-token chunks than residual splits, one warp per CTA") {
    // residual 600: windows of up to 663 tokens, 42 chunks, so the residual splits are
    // capped (kMaxResSplits) and warps walk several chunks. Then head_dim 256 with
    // 256-token blocks of 8-bit codes, whose tiles leave room for one warp per CTA only.
    Shape s;
    s.heads = 2; s.dim = 64; s.q_heads = 8; s.seqs = 3; s.residual = 600;
    run_scenario(s, 9, 20);
    Shape w;
    w.heads = 1; w.dim = 256; w.q_heads = 4; w.seqs = 2; w.block = 256; w.residual = 600;
    w.rk = 0.004f; w.rv = 0.01f; w.bits_k = 8; w.bits_v = 8;
    run_scenario(w, 10, 10);
  }
  TEST_CASE("GQA 5 and 7 (tensor-core family: query heads padded to the mma's 8), head_dim 32, 96, 256") {
    for (int d : {32, 96, 256}) {
      Shape s;
      s.heads = 2; s.dim = d; s.q_heads = d == 96 ? 14 : 10; s.seqs = 2;
      s.q_dtype = PACKKV_DTYPE_F16;
      CAPTURE(d);
      run_scenario(s, 20 + d, 10);
    }
  }
  TEST_CASE("tensor-core dense window on mma (fp16 ring): head_dim 64, 128, 256, GQA 8 and 3, sinks, long windows") {
    // Tensor-core decode runs the sink tokens and the ring of an fp16 cache on mma.sync
    // (tensorcore_window.cuh): 8 and 3 query heads per CTA, partial 16-token chunks, ring
    // wrap-around, several chunks per warp (residual 200: up to 267 dense tokens).
    ForceFamily ff("tensor-core");
    for (int d : {64, 128, 256}) {
      Shape s;
      s.heads = 2; s.dim = d; s.q_heads = d == 128 ? 6 : 16; s.seqs = 3; s.residual = 200; s.sinks = 4;
      s.q_dtype = PACKKV_DTYPE_F16;
      CAPTURE(d);
      run_scenario(s, 110 + d, 20);
    }
  }
  TEST_CASE("both attention families forced (PACKKV_CUDA_ATTN_FAMILY=cuda-core, tensor-core)") {
    // The dispatcher picks one family per call (tensor cores from GQA group 2 on); this
    // runs each family on GQA 4, GQA 8 and MHA shapes, whatever the default is.
    for (const char* fam : {"cuda-core", "tensor-core"}) {
      REQUIRE(setenv("PACKKV_CUDA_ATTN_FAMILY", fam, 1) == 0);
      CAPTURE(fam);
      Shape s;
      s.heads = 4; s.dim = 128; s.q_heads = 16; s.seqs = 3;
      s.in_dtype = PACKKV_DTYPE_F16; s.q_dtype = PACKKV_DTYPE_F16;
      run_scenario(s, 30, 20);
      Shape g;
      g.heads = 2; g.dim = 64; g.q_heads = 16; g.seqs = 2; g.bits_k = 6; g.bits_v = 5; g.rk = 0.02f; g.rv = 0.04f;
      g.gran = PACKKV_SCALE_PER_TOKEN_HEAD;
      run_scenario(g, 31, 20);
      Shape d2;  // GQA 2
      d2.seqs = 2;
      run_scenario(d2, 33, 10);
      Shape m;  // MHA at a head_dim that is not a multiple of 32, no repacking
      m.heads = 3; m.dim = 80; m.q_heads = 3; m.seqs = 2; m.repack = PACKKV_REPACK_NONE;
      run_scenario(m, 32, 20);
    }
    REQUIRE(unsetenv("PACKKV_CUDA_ATTN_FAMILY") == 0);
  }
  TEST_CASE("decode_multi (q_len 3, GQA 4): the CUDA backend matches the CPU backend") {
    Shape s;
    s.heads = 2; s.dim = 128; s.q_heads = 8; s.seqs = 3; s.q_dtype = PACKKV_DTYPE_F16;
    std::mt19937 rng(40);
    Pair p(s);
    p.append({0, 1, 2}, {700, 1500, 90}, rng);
    const int q_len = 3, hq = s.q_heads, D = s.dim, ns = s.seqs;
    const std::vector<int32_t> ids = {2, 0, 1};
    std::normal_distribution<float> n01(0.f, 1.f);
    std::vector<float> q(static_cast<size_t>(ns) * hq * q_len * D);
    for (float& x : q) x = n01(rng);
    const std::vector<uint16_t> qh = to_half_bits(q);
    for (size_t i = 0; i < q.size(); ++i) {  // the CPU gets the same rounded values
      __half h;
      std::memcpy(&h, &qh[i], 2);
      q[i] = __half2float(h);
    }
    DBuf dq(qh.size() * 2);
    to_dev(dq, qh);
    size_t wc = 0, wg = 0;
    REQUIRE(packkv_attn_workspace_size(p.cpu.c, ns, hq * q_len, &wc) == PACKKV_OK);
    REQUIRE(packkv_attn_workspace_size(p.gpu.c, ns, hq * q_len, &wg) == PACKKV_OK);
    std::vector<uint8_t> wsc(wc + 1);
    DBuf wsg(wg);
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<float> o_c(q.size()), l_c(static_cast<size_t>(ns) * hq * q_len);
    REQUIRE(packkv_attn_decode_multi(p.cpu.c, ns, ids.data(), hq, q_len, q.data(), PACKKV_DTYPE_F32, scale, o_c.data(),
                                     l_c.data(), wsc.data(), wc, nullptr) == PACKKV_OK);
    DBuf dout(q.size() * 4), dlse(l_c.size() * 4);
    CUDA_OK(cudaMemset(dout.p, 0xff, q.size() * 4));
    packkv_status_t st = packkv_attn_decode_multi(p.gpu.c, ns, ids.data(), hq, q_len, dq.p, PACKKV_DTYPE_F16, scale,
                                                  dout.as<float>(), dlse.as<float>(), wsg.p, wg, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    REQUIRE(packkv_cache_sync(p.gpu.c) == PACKKV_OK);
    CHECK(rel_err(o_c, from_dev<float>(dout, q.size())) <= 1e-5);
    const std::vector<float> l_g = from_dev<float>(dlse, l_c.size());
    for (size_t i = 0; i < l_c.size(); ++i) CHECK(std::fabs(l_c[i] - l_g[i]) <= 1e-5 * std::max(1.0f, std::fabs(l_c[i])));
  }
  TEST_CASE("block 256 (max), bits 7") {
    Shape s;
    s.heads = 2; s.dim = 64; s.q_heads = 2; s.seqs = 1; s.block = 256; s.residual = 16;
    s.rk = 0.01f; s.bits_k = 7; s.bits_v = 3;
    run_scenario(s, 7, 10);
  }
  TEST_CASE("empty and short sequences: zero output, lse -inf") {
    Shape s;
    s.seqs = 3;
    std::mt19937 rng(8);
    Pair p(s);
    p.append({1}, {5}, rng);  // seq 0 and 2 stay empty, seq 1 only residual
    p.check_all(rng);
  }
  TEST_CASE("non-finite input is reported by sync, naming sequence and token") {
    Shape s;
    packkv_cache_params_t prm = make_params(s, 0);
    Cache c(prm);
    const size_t row = static_cast<size_t>(s.heads) * s.dim;
    for (int n : {10, 300}) {  // residual-only and flushed paths
      std::vector<float> k(n * row, 1.0f), v(n * row, 2.0f);
      k[(n - 3) * row + 5] = NAN;
      DBuf dk(k.size() * 4), dv(v.size() * 4);
      to_dev(dk, k);
      to_dev(dv, v);
      int32_t id = 1, cnt = n;
      REQUIRE(packkv_cache_reset(c.c) == PACKKV_OK);
      REQUIRE(packkv_cache_append(c.c, 1, &id, &cnt, dk.p, dv.p, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
      CHECK(packkv_cache_sync(c.c) == PACKKV_ERR_INVALID_ARGUMENT);
      std::string msg = packkv_last_error_message();
      CAPTURE(msg);
      CHECK(msg.find("sequence 1 token " + std::to_string(n - 3)) != std::string::npos);
      CHECK(packkv_cache_sync(c.c) == PACKKV_OK);  // reported once
    }
  }
  TEST_CASE("constant tokens and signed zeros: identical bytes") {
    for (packkv_scale_granularity_t gran : {PACKKV_SCALE_PER_TOKEN, PACKKV_SCALE_PER_TOKEN_HEAD}) {
      Shape s;
      s.seqs = 1;
      s.gran = gran;
      s.kv_dtype = PACKKV_DTYPE_F32;
      std::mt19937 rng(10);
      Pair p(s);
      const size_t n = 256;
      std::vector<float> k = kv_data(n, p.row, rng, 2.0f), v = kv_data(n, p.row, rng, 0.5f);
      for (size_t t = 0; t < n; t += 3) {
        for (size_t i = 0; i < p.row; ++i) {
          k[t * p.row + i] = ((i * 7 + t) % 5 == 0) ? -0.0f : 0.0f;  // zero token, mixed signs
          v[t * p.row + i] = t % 2 ? 3.0f : -0.0f;                    // constant token
        }
        if (t % 6 == 0) k[t * p.row] = -0.0f;                         // first value -0
      }
      p.append_data({0}, {static_cast<int32_t>(n)}, k, v);
      CAPTURE(gran);
      p.check_all(rng);
    }
  }
  TEST_CASE("several caches on every device in one process, the caller's device is restored") {
    // Issue 8 item 1: each cache is bound to its device at creation and every call sets
    // and restores the current device. Two caches per visible device (one GPU: two caches
    // on it), appended and queried interleaved while the caller's current device is the
    // last one; each must equal a CPU cache fed the same data.
    int n_dev = 0;
    CUDA_OK(cudaGetDeviceCount(&n_dev));
    Shape s;
    s.heads = 2; s.dim = 64; s.q_heads = 4; s.seqs = 1;
    const size_t row = static_cast<size_t>(s.heads) * s.dim, n = 700;
    std::mt19937 rng(17);
    std::vector<std::unique_ptr<Cache>> gpu, cpu;
    std::vector<std::vector<float>> ks, vs;
    for (int d = 0; d < n_dev; ++d)
      for (int j = 0; j < 2; ++j) {
        gpu.emplace_back(new Cache(make_params(s, d)));
        cpu.emplace_back(new Cache(make_params(s, -1)));
        ks.push_back(kv_data(n, row, rng, 2.0f));
        vs.push_back(kv_data(n, row, rng, 0.5f));
      }
    const int caller_device = n_dev - 1;
    for (size_t chunk = 0; chunk < 2; ++chunk)
      for (size_t i = 0; i < gpu.size(); ++i) {
        const int d = static_cast<int>(i / 2);
        const int32_t id = 0, cnt = static_cast<int32_t>(n / 2);
        const float* hk = ks[i].data() + chunk * cnt * row;
        const float* hv = vs[i].data() + chunk * cnt * row;
        REQUIRE(packkv_cache_append(cpu[i]->c, 1, &id, &cnt, hk, hv, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
        CUDA_OK(cudaSetDevice(d));
        DBuf dk(cnt * row * 4), dv(cnt * row * 4);
        CUDA_OK(cudaMemcpy(dk.p, hk, cnt * row * 4, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(dv.p, hv, cnt * row * 4, cudaMemcpyHostToDevice));
        CUDA_OK(cudaSetDevice(caller_device));
        REQUIRE(packkv_cache_append(gpu[i]->c, 1, &id, &cnt, dk.p, dv.p, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
        REQUIRE(packkv_cache_sync(gpu[i]->c) == PACKKV_OK);
        int now = -1;
        CUDA_OK(cudaGetDevice(&now));
        CHECK(now == caller_device);
        int32_t bound = -2;
        REQUIRE(packkv_cache_device(gpu[i]->c, &bound) == PACKKV_OK);
        CHECK(bound == d);
      }
    for (size_t i = 0; i < gpu.size(); ++i) {
      const int d = static_cast<int>(i / 2);
      const int32_t id = 0;
      const std::vector<float> q = kv_data(1, static_cast<size_t>(s.q_heads) * s.dim, rng, 0.5f);
      std::vector<float> ref(static_cast<size_t>(s.q_heads) * s.dim);
      REQUIRE(packkv_attn_decode(cpu[i]->c, 1, &id, s.q_heads, q.data(), PACKKV_DTYPE_F32, 0.125f, ref.data(),
                                 nullptr, nullptr, 0, nullptr) == PACKKV_OK);
      size_t ws_bytes = 0;
      REQUIRE(packkv_attn_workspace_size(gpu[i]->c, 1, s.q_heads, &ws_bytes) == PACKKV_OK);
      CUDA_OK(cudaSetDevice(d));
      DBuf dq(q.size() * 4), dout(ref.size() * 4), ws(ws_bytes);
      CUDA_OK(cudaMemcpy(dq.p, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
      CUDA_OK(cudaSetDevice(caller_device));
      REQUIRE(packkv_attn_decode(gpu[i]->c, 1, &id, s.q_heads, dq.p, PACKKV_DTYPE_F32, 0.125f, dout.as<float>(),
                                 nullptr, ws.p, ws_bytes, nullptr) == PACKKV_OK);
      REQUIRE(packkv_cache_sync(gpu[i]->c) == PACKKV_OK);
      CHECK(rel_err(ref, from_dev<float>(dout, ref.size())) <= 1e-5);
      const packkv::CacheImpl& gi = packkv::internal_impl(gpu[i]->c);
      const packkv::CacheImpl& ci = packkv::internal_impl(cpu[i]->c);
      REQUIRE(gi.n_blocks(0) == ci.n_blocks(0));
      for (int64_t b = 0; b < ci.n_blocks(0); ++b) CHECK(gi.block_bytes(0, b) == ci.block_bytes(0, b));
    }
    CUDA_OK(cudaSetDevice(0));
  }
  TEST_CASE("wide zero points and scales (the version-1 blob layout): identical bytes") {
    Shape s;
    s.zs = PACKKV_ZS_WIDE;
    run_scenario(s, 21);
    s.heads = 3; s.gran = PACKKV_SCALE_PER_TOKEN_HEAD; s.q_heads = 3;
    run_scenario(s, 22, 20);
    // Both families on wide blocks (the defaults above pick the CUDA-core family: GQA <= 2,
    // short sequences): GQA 4 and GQA 8 (tensor-core by default), per token and per token-head.
    for (const char* fam : {"cuda-core", "tensor-core"}) {
      ForceFamily force(fam);
      CAPTURE(fam);
      Shape g;
      g.zs = PACKKV_ZS_WIDE;
      g.heads = 2; g.dim = 128; g.q_heads = 8; g.seqs = 2; g.q_dtype = PACKKV_DTYPE_F16;
      run_scenario(g, 24, 20);
      g.heads = 2; g.dim = 64; g.q_heads = 16; g.gran = PACKKV_SCALE_PER_TOKEN_HEAD; g.bits_k = 6; g.bits_v = 5;
      run_scenario(g, 25, 20);
    }
  }
  TEST_CASE("compact zero points and scales: wide fallback blocks (groups far from zero, fp32 constants)") {
    // Each attention family reads compact, wide fallback and ordinary compact blocks of one
    // sequence; GQA 2 (CUDA-core by default) and GQA 4 (tensor-core by default), each family
    // also forced.
    for (const char* fam : {"", "cuda-core", "tensor-core"}) {
      std::unique_ptr<ForceFamily> force;
      if (*fam) force.reset(new ForceFamily(fam));
      CAPTURE(fam);
      for (int q_heads : {4, 8}) {
        for (packkv_scale_granularity_t gran : {PACKKV_SCALE_PER_TOKEN, PACKKV_SCALE_PER_TOKEN_HEAD}) {
          const int granularity = static_cast<int>(gran);
          CAPTURE(q_heads);
          CAPTURE(granularity);
          Shape s;
          s.heads = 2; s.dim = 64; s.q_heads = q_heads; s.seqs = 2; s.block = 32; s.residual = 16;
          s.kv_dtype = PACKKV_DTYPE_F32; s.gran = gran;
          Pair p(s);
          std::mt19937 rng(23);
          const size_t row = p.row;
          const int T = 200;
          std::vector<float> k = kv_data(2 * T, row, rng, 2.0f), v = kv_data(2 * T, row, rng, 0.5f);
          for (int t : {5, 70, 71, 150, 260}) {  // |min / s| > 32767 at r = 0.1: the block falls back to wide fields
            for (size_t i = 0; i < row; ++i) k[t * row + i] = 3000.0f + 0.25f * static_cast<float>(i % 3);
          }
          for (size_t i = 0; i < row; ++i) v[100 * row + i] = 0.3f;       // fp32 constant: no compact fields
          for (size_t i = 0; i < row; ++i) v[300 * row + i] = 0.2998046875f;  // fp16 constant: compact, exact
          p.append_data({0, 1}, {T, T}, k, v);
          p.check_all(rng);
          // some blocks are wide fallback blocks, some are not
          const packkv::CacheImpl& impl = packkv::internal_impl(p.cpu.c);
          const packkv::fmt::Shape& sh = impl.config().shape;
          int wide = 0, all = 0;
          for (int q = 0; q < 2; ++q)
            for (int64_t b = 0; b < impl.n_blocks(q); ++b, ++all) wide += sh.zs_wide(impl.block_bytes(q, b).data());
          CHECK(wide >= 3);
          CHECK(wide < all);
        }
      }
    }
  }
  TEST_CASE("sink tokens 1 and 4: identical blocks, stats, decompression and attention, both families") {
    // Sinks are the first tokens of each sequence (positions 0..sinks-1), blocks start after
    // them. Prefills and decode steps (run_scenario), then sequences whose sinks fill over
    // several appends (1-3 tokens, then a prefill crossing the sink count, then decode steps
    // crossing flushes): every step against the CPU cache.
    for (int sinks : {1, 4}) {
      for (const char* fam : {"", "cuda-core", "tensor-core"}) {
        std::unique_ptr<ForceFamily> force;
        if (*fam) force.reset(new ForceFamily(fam));
        CAPTURE(sinks);
        CAPTURE(fam);
        Shape s;
        s.sinks = sinks; s.heads = 2; s.dim = 64; s.q_heads = 8; s.seqs = 2; s.block = 32; s.residual = 16;
        run_scenario(s, 40 + sinks, 20);
        Pair p(s);
        std::mt19937 rng(50 + sinks);
        p.append({0, 1}, {1, 2}, rng);
        p.check_all(rng);
        p.append({0, 1}, {2, 1}, rng);
        p.check_all(rng);
        p.append({0, 1}, {90, 3}, rng);
        p.check_all(rng);
        for (int step = 0; step < 40; ++step) p.append({0, 1}, {1, 1}, rng);
        p.check_all(rng);
        CHECK(p.len(0) == 133);
        // an fp32 kv_dtype (sinks and window), per-token-head scales, MHA
        Shape f = s;
        f.kv_dtype = PACKKV_DTYPE_F32; f.gran = PACKKV_SCALE_PER_TOKEN_HEAD; f.q_heads = 2;
        run_scenario(f, 60 + sinks, 10);
      }
    }
  }
  TEST_CASE("K centring: identical blocks (K - mu of block 0), stats, decompression and attention, both families") {
    // The mean comes from each sequence's block 0 (computed by the flush that writes it,
    // float64 in token order as the CPU backend); blocks store K - mu, scores add q . mu,
    // decompression adds mu back (kv_dtype F16, which centring needs). With and without sink
    // tokens (block 0 then starts after them), per token and per token-head scales, prefill
    // and token-by-token appends.
    for (int sinks : {0, 4}) {
      for (const char* fam : {"", "cuda-core", "tensor-core"}) {
        std::unique_ptr<ForceFamily> force;
        if (*fam) force.reset(new ForceFamily(fam));
        CAPTURE(sinks);
        CAPTURE(fam);
        Shape s;
        s.center = true; s.sinks = sinks; s.heads = 2; s.dim = 64; s.q_heads = 8; s.seqs = 2; s.block = 32;
        s.residual = 16;
        run_scenario(s, 70 + sinks, 20);
        Pair p(s);
        std::mt19937 rng(80 + sinks);
        for (int step = 0; step < 60; ++step) p.append({0, 1}, {1, 2}, rng);  // block 0 from single tokens
        p.check_all(rng);
        Shape h = s;
        h.gran = PACKKV_SCALE_PER_TOKEN_HEAD; h.q_heads = 2; h.q_dtype = PACKKV_DTYPE_F16; h.dim = 128;
        run_scenario(h, 90 + sinks, 10);
      }
    }
  }
  TEST_CASE("greedy repacking is CPU-only") {
    Shape s;
    s.repack = PACKKV_REPACK_GREEDY;
    packkv_cache_params_t prm = make_params(s, 0);
    packkv_cache_t* c = nullptr;
    CHECK(packkv_cache_create(&prm, &c) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(c == nullptr);
  }
  TEST_CASE("the sliding window is CPU-only (NOT_SUPPORTED, nothing changes)") {
    Shape s;
    packkv_cache_params_t prm = make_params(s, 0);
    packkv_cache_t* empty = nullptr;
    REQUIRE(packkv_cache_create(&prm, &empty) == PACKKV_OK);
    CHECK(packkv_x_cache_set_window(empty, 64) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(std::string(packkv_last_error_message()).find("packkv_x_cache_set_window") != std::string::npos);
    int64_t start = -1;
    REQUIRE(packkv_x_cache_window_start(empty, 0, &start) == PACKKV_OK);
    CHECK(start == 0);
    packkv_cache_destroy(empty);
  }
  TEST_CASE("more than 2^30 blocks per sequence is refused with a message") {
    Shape s;
    packkv_cache_params_t prm = make_params(s, 0);
    prm.block_tokens = 16;
    prm.max_tokens_per_seq = int64_t{1} << 40;  // 2^36 blocks: valid on the CPU, too many here
    packkv_cache_t* c = nullptr;
    CHECK(packkv_cache_create(&prm, &c) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(c == nullptr);
    CHECK(std::string(packkv_last_error_message()).find("2^30") != std::string::npos);
  }
  TEST_CASE("an attention grid over CUDA's 65535 CTA rows is refused with a message") {
    // 4096 KV heads: GQA 65 needs 4096 * ceil(65 / 4) = 69632 rows (refused before any
    // launch, NOT_SUPPORTED), GQA 60 needs 61440 (runs; the sequence is empty, so the
    // output is zero and lse -inf).
    Shape s;
    s.heads = 4096; s.dim = 32; s.seqs = 1;
    Cache c(make_params(s, 0));
    const int32_t id = 0;
    for (int group : {65, 60}) {
      CAPTURE(group);
      const int qh = s.heads * group;
      const size_t n = static_cast<size_t>(qh) * s.dim;
      size_t ws = 0;
      REQUIRE(packkv_attn_workspace_size(c.c, 1, qh, &ws) == PACKKV_OK);
      DBuf dws(ws), dq(n * 4), dout(n * 4), dlse(static_cast<size_t>(qh) * 4);
      CUDA_OK(cudaMemset(dq.p, 0, n * 4));
      CUDA_OK(cudaMemset(dout.p, 0xff, n * 4));
      const packkv_status_t st = packkv_attn_decode(c.c, 1, &id, qh, dq.p, PACKKV_DTYPE_F32, 0.1f,
                                                    dout.as<float>(), dlse.as<float>(), dws.p, ws, nullptr);
      if (group == 65) {
        CHECK(st == PACKKV_ERR_NOT_SUPPORTED);
        CHECK(std::string(packkv_last_error_message()).find("65535") != std::string::npos);
      } else {
        REQUIRE(st == PACKKV_OK);
        REQUIRE(packkv_cache_sync(c.c) == PACKKV_OK);
        const std::vector<float> out = from_dev<float>(dout, n), lse = from_dev<float>(dlse, qh);
        CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 0.f; }));
        CHECK(std::all_of(lse.begin(), lse.end(), [](float x) { return std::isinf(x) && x < 0; }));
      }
    }
  }
  TEST_CASE("remove_seq frees and the id is reusable, memory follows compressed size") {
    Shape s;
    s.heads = 4; s.dim = 128; s.q_heads = 4; s.seqs = 2;
    std::mt19937 rng(9);
    Pair p(s);
    p.append({0, 1}, {4000, 3000}, rng);
    p.check_all(rng);
    packkv_cache_stats_t g;
    std::memset(&g, 0, sizeof g);
    g.struct_size = sizeof g;
    REQUIRE(packkv_cache_stats(p.gpu.c, -1, &g) == PACKKV_OK);
    CHECK(g.compressed_bytes_reserved <= 3 * g.compressed_bytes_used + (1 << 20));
    REQUIRE(packkv_cache_remove_seq(p.cpu.c, 0) == PACKKV_OK);
    REQUIRE(packkv_cache_remove_seq(p.gpu.c, 0) == PACKKV_OK);
    p.append({0}, {500}, rng);
    p.check_all(rng);
  }
}

// Issue 18 item 3, the CUDA side of tests/host/test_numeric_edges.cpp's "attention over K and
// V near +-3e38": an fp32 CUDA cache holding values near the fp32 limit. apply and decode
// must be finite and equal float64 arithmetic on the decompressed values (scores where the
// exact score fits fp32). Both backends: the CPU in double where needed, CUDA with the
// accumulator exponent of online_softmax.cuh, normalized split partials, fp64 retries of
// non-finite folds and the clamped path of clamped_block.cuh for grid points beyond
// FLT_MAX (with this data about half the tokens have such grid points).
// known_gap: the queries of magnitude ~1 against K near 3e38 (raw scores up to ~1e39). Measured
// on an H100 at d097b27: decode with per-token scales finite but one query head off by ~1e38,
// and scores whose exact value is below 1e38 returned as inf (both granularities). apply and the
// tiny queries (|q| ~ 1e-37) pass. The gap runs as a separate may_fail case until the CUDA
// score path is fixed; everything else is a hard test.
static void attention_near_fp32_limit(bool known_gap) {
    constexpr int kH = 4, kD = 64, kN = 300, kHq = 8;
    constexpr size_t kR = (size_t)kH * kD;
    std::mt19937 rng(18);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(kN * kR);
    for (float& e : x) e = u(rng) * 3e38f;
    DBuf dx(x.size() * 4);
    to_dev(dx, x);
    for (packkv_scale_granularity_t gran : {PACKKV_SCALE_PER_TOKEN, PACKKV_SCALE_PER_TOKEN_HEAD}) {
      CAPTURE(gran);
      packkv_cache_params_t p = pkt::params(kH, kD);
      p.device = 0;
      p.kv_dtype = PACKKV_DTYPE_F32;
      p.scale_granularity = gran;
      Cache c(p);
      int32_t id = 0, n = kN;
      REQUIRE(packkv_cache_append(c, 1, &id, &n, dx.p, dx.p, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
      REQUIRE(packkv_cache_sync(c) == PACKKV_OK);
      DBuf dk(kN * kR * 4), dv(kN * kR * 4);
      REQUIRE(packkv_cache_decompress(c, 0, dk.as<float>(), dv.as<float>(), kN, nullptr) == PACKKV_OK);
      const std::vector<float> hk = from_dev<float>(dk, kN * kR), hv = from_dev<float>(dv, kN * kR);
      double vmax = 0;
      for (float e : hv) {
        REQUIRE(std::isfinite(e));
        vmax = std::max(vmax, (double)std::fabs(e));
      }
      size_t ws_bytes = 0;
      REQUIRE(packkv_attn_workspace_size(c, 1, kHq, &ws_bytes) == PACKKV_OK);
      DBuf ws(ws_bytes), dprobs((size_t)kHq * kN * 4), dout((size_t)kHq * kD * 4), dq((size_t)kHq * kD * 4),
          dlse(kHq * 4), dsc((size_t)kHq * kN * 4);

      std::vector<float> probs((size_t)kHq * kN, 0.0f);
      for (int j = 0; j < kHq; ++j) probs[(size_t)j * kN + 3] = 1.0f;  // the reproducer
      to_dev(dprobs, probs);
      REQUIRE(packkv_attn_apply(c, 1, &id, kHq, dprobs.as<float>(), kN, dout.as<float>(), ws.p, ws_bytes, nullptr) ==
              PACKKV_OK);
      std::vector<float> out = from_dev<float>(dout, (size_t)kHq * kD);
      for (int j = 0; j < kHq; ++j)
        for (int ch = 0; ch < kD; ++ch) {
          const float want = hv[3 * kR + (size_t)(j / (kHq / kH)) * kD + ch], got = out[(size_t)j * kD + ch];
          REQUIRE(std::isfinite(got));
          CHECK(std::fabs((double)got - want) <= 1e-6 * vmax);
        }
      std::vector<double> pd(probs.size());
      for (int j = 0; j < kHq; ++j) {
        double sum = 0;
        for (int t = 0; t < kN; ++t) sum += pd[(size_t)j * kN + t] = 0.5 + 0.5 * u(rng);
        for (int t = 0; t < kN; ++t) probs[(size_t)j * kN + t] = (float)(pd[(size_t)j * kN + t] / sum);
        for (int t = 0; t < kN; ++t) pd[(size_t)j * kN + t] = probs[(size_t)j * kN + t];
      }
      to_dev(dprobs, probs);
      REQUIRE(packkv_attn_apply(c, 1, &id, kHq, dprobs.as<float>(), kN, dout.as<float>(), ws.p, ws_bytes, nullptr) ==
              PACKKV_OK);
      out = from_dev<float>(dout, (size_t)kHq * kD);
      std::vector<double> oref = pkt::ref_apply(hv, kN, kH, kD, pd, kHq);
      for (size_t i = 0; i < oref.size(); ++i) {
        REQUIRE(std::isfinite(out[i]));
        CHECK(std::fabs(out[i] - oref[i]) <= 1e-5 * vmax);
      }
      for (float qmag : {1.0f, 1e-37f}) {
        CAPTURE(qmag);
        if (known_gap != (qmag == 1.0f)) continue;
        std::vector<float> q((size_t)kHq * kD);
        for (float& e : q) e = u(rng) * qmag;
        to_dev(dq, q);
        const float scale = 0.125f;
        REQUIRE(packkv_attn_decode(c, 1, &id, kHq, dq.p, PACKKV_DTYPE_F32, scale, dout.as<float>(), dlse.as<float>(),
                                   ws.p, ws_bytes, nullptr) == PACKKV_OK);
        out = from_dev<float>(dout, (size_t)kHq * kD);
        const std::vector<float> lse = from_dev<float>(dlse, kHq);
        const std::vector<double> sref = pkt::ref_scores(hk, kN, kH, kD, q, kHq);
        std::vector<double> lref;
        oref = pkt::ref_apply(hv, kN, kH, kD, pkt::ref_softmax(sref, kN, kHq, scale, &lref), kHq);
        for (size_t i = 0; i < oref.size(); ++i) {
          REQUIRE(std::isfinite(out[i]));
          CHECK(std::fabs(out[i] - oref[i]) <= 1e-4 * vmax);
        }
        for (int j = 0; j < kHq; ++j) {
          if (lref[j] > 3.4028234663852886e38)
            CHECK(lse[j] == INFINITY);
          else
            CHECK(std::fabs(lse[j] - lref[j]) <= 1e-5 * std::fabs(lref[j]) + 1e-5);
        }
        REQUIRE(packkv_attn_scores(c, 1, &id, kHq, dq.p, PACKKV_DTYPE_F32, dsc.as<float>(), kN, ws.p, ws_bytes,
                                   nullptr) == PACKKV_OK);
        const std::vector<float> sc = from_dev<float>(dsc, (size_t)kHq * kN);
        for (size_t i = 0; i < sc.size(); ++i)
          if (std::fabs(sref[i]) < 1e38) {
            REQUIRE(std::isfinite(sc[i]));
          }
      }
    }
}

TEST_SUITE("gpu") {
  TEST_CASE("attention over K and V near +-3e38 stays finite (fp32 cache, both granularities)") {
    attention_near_fp32_limit(false);
  }
  // Known gap (issue 18 item 3, CUDA part): see attention_near_fp32_limit.
  TEST_CASE("scores and decode with K near +-3e38 and |q| ~ 1 match float64 (known gap)" * doctest::may_fail()) {
    attention_near_fp32_limit(true);
  }
}

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.find("list") != std::string::npos || a == "-ltc" || a == "-lts" || a == "-h" || a == "--help")
      listing = true;
  }
  if (!listing) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return 77;  // CTest: skipped
  }
  doctest::Context ctx(argc, argv);
  return ctx.run();
}

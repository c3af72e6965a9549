// The round kernels of CPU attention (cpu/round_kernels.h) in every instruction set this
// CPU has (portable, AVX2, AVX-512; cpu/isa.h): unpacking of every encode length 0..8 and
// the transposes, checked exactly against offsets written with fmt::write_pack (one-hot
// queries / weights make every product exact), with the round ending at the very end of
// its buffer (no byte past the tile is read: ASan checks that). Then whole attention calls
// on each path against the portable one (<= 1e-6 relative).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "cpu/isa.h"
#include "cpu/round_kernels.h"
#include "cpu/simd_unpack.h"
#include "format/round_cursor.h"
#include "format/round_tile.h"
#include "helpers.h"

namespace {

using packkv::CpuIsa;

std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> v = {CpuIsa::kPortable};
  if ((int)packkv::cpu_isa_supported() >= (int)CpuIsa::kAvx2) v.push_back(CpuIsa::kAvx2);
  if ((int)packkv::cpu_isa_supported() >= (int)CpuIsa::kAvx512) v.push_back(CpuIsa::kAvx512);
  return v;
}

// One round of d channels of `bits`-bit codes: channel ch has encode length lens[ch] and
// offsets offs[ch][0..15], minimum mins[ch]. Returns the tile bytes (exactly its size).
std::vector<uint8_t> make_round(int d, int bits, const std::vector<int>& lens, const std::vector<uint32_t>& mins,
                                const std::vector<uint32_t>& offs) {
  size_t bytes = packkv::fmt::round_header_bytes(d, bits);
  for (int L : lens) bytes += 2 * (size_t)L;
  std::vector<uint8_t> tile(bytes, 0);
  packkv::fmt::RoundWriter w(tile.data(), d, bits);
  for (int ch = 0; ch < d; ++ch) {
    w.set_channel_min(ch, mins[ch]);
    w.set_channel_length(ch, lens[ch]);
    packkv::fmt::write_pack(w.pack(), &offs[(size_t)ch * 16], lens[ch]);
    w.skip_pack(lens[ch]);
  }
  return tile;
}

}  // namespace

TEST_CASE("round kernels: exact unpacking of every encode length on every instruction set") {
  std::mt19937 rng(5);
  for (int bits = 1; bits <= 8; ++bits)
    for (int d : {32, 48, 128}) {
      std::vector<int> lens(d);
      std::vector<uint32_t> mins(d), offs((size_t)d * 16);
      for (int ch = 0; ch < d; ++ch) {
        lens[ch] = (ch * 7 + bits) % (bits + 1);  // every length 0..bits
        mins[ch] = (uint32_t)(rng() % (1u << bits));
        for (int i = 0; i < 16; ++i)
          offs[(size_t)ch * 16 + i] = lens[ch] ? (uint32_t)(rng() % (1u << lens[ch])) : 0u;
        if (lens[ch]) offs[(size_t)ch * 16 + (ch % 16)] = (1u << lens[ch]) - 1u;  // the largest offset occurs
      }
      const std::vector<uint8_t> tile = make_round(d, bits, lens, mins, offs);
      const uint8_t* end = tile.data() + tile.size();
      for (CpuIsa isa : supported_isas()) {
        INFO("isa " << packkv::cpu_isa_name(isa) << ", bits " << bits << ", d " << d);
        const packkv::RoundKernels& k = packkv::round_kernels(isa);
        std::vector<float> scratch((size_t)16 * d);
        // scores with one-hot queries q_j = e_c(j): acc[j][i] = offset of channel c(j), token
        // i, min_term[j] = min of channel c(j) (q_in = 3 q: the minimums use q_in, the offsets
        // q); n_q = d (c(j) = j: the staged path) and n_q <= 8 (the fused paths)
        for (int nq : {d, 1, 3, 4, 5, 8}) {
          auto c_of = [&](int j) { return nq == d ? j : (j * 11 + 5) % d; };
          std::vector<float> q((size_t)nq * d, 0.0f), q_in((size_t)nq * d, 0.0f), acc((size_t)nq * 16, -1.0f);
          for (int j = 0; j < nq; ++j) {
            q[(size_t)j * d + c_of(j)] = 1.0f;
            q_in[(size_t)j * d + c_of(j)] = 3.0f;
          }
          std::vector<double> min_term(nq, -1.0);
          packkv::fmt::RoundCursor cur(tile.data(), d, bits);
          k.score_round(&cur, d, q.data(), q_in.data(), nq, acc.data(), min_term.data(), end, scratch.data());
          CHECK(cur.round_offset() == tile.size());  // the cursor is at the next round
          bool ok = true;
          for (int j = 0; j < nq; ++j) {
            ok = ok && min_term[j] == 3.0 * mins[c_of(j)];
            for (int i = 0; i < 16; ++i) ok = ok && acc[(size_t)j * 16 + i] == (float)offs[(size_t)c_of(j) * 16 + i];
          }
          CHECK(ok);
        }
        bool ok = true;
        // apply with one-hot weights w_j = e_j (j < 16): part[j][ch] = offset of channel ch,
        // token j, out[j][ch] = min_ch * wsum_j; part and out start at 1 (the kernels add)
        std::vector<float> w(16 * 16, 0.0f), part((size_t)16 * d, 1.0f);
        std::vector<double> out((size_t)16 * d, 1.0), wsum(16 * 2);
        for (int j = 0; j < 16; ++j) {
          w[(size_t)j * 16 + j] = 1.0f;
          wsum[(size_t)j * 2] = 0.5 + j;  // stride 2: the second column is not read
          wsum[(size_t)j * 2 + 1] = 1e9;
        }
        packkv::fmt::RoundCursor cur2(tile.data(), d, bits);
        k.apply_round(&cur2, d, w.data(), 16, 16, part.data(), out.data(), wsum.data(), 2, end, scratch.data());
        CHECK(cur2.round_offset() == tile.size());
        ok = true;
        for (int j = 0; j < 16; ++j)
          for (int ch = 0; ch < d; ++ch)
            ok = ok && part[(size_t)j * d + ch] == 1.0f + (float)offs[(size_t)ch * 16 + j] &&
                 out[(size_t)j * d + ch] == 1.0 + (double)mins[ch] * (0.5 + j);
        CHECK(ok);
      }
    }
}

TEST_CASE("round kernels: attention on every instruction set agrees with the portable path") {
  const CpuIsa before = packkv::cpu_isa();
  for (int bits : {1, 3, 4, 8}) {
    packkv_cache_params_t p = pkt::params(2, 64, 2);
    p.bits_k = bits;
    p.bits_v = bits;
    p.rel_scale_k = p.rel_scale_v = bits == 8 ? 1.0f / 254 : 0.1f;
    p.n_threads = 1;
    pkt::Cache c(p);
    const std::vector<float> k = pkt::kv_data(700, 2, 64, 3), v = pkt::kv_data(700, 2, 64, 4);
    pkt::append1(c, 0, k, v, 0, 700, 128);
    pkt::append1(c, 1, k, v, 0, 300, 128);
    const int hq = 6;  // GQA 3
    const std::vector<float> q = pkt::kv_data(2, hq, 64, 5, 0.5f);
    const int32_t ids[2] = {0, 1};
    std::vector<float> probs((size_t)2 * hq * 700);
    for (size_t i = 0; i < probs.size(); ++i) probs[i] = (float)((i * 13) % 17) / 17.0f;
    std::vector<std::vector<float>> got;
    for (CpuIsa isa : supported_isas()) {
      packkv::set_cpu_isa_for_tests(isa);
      std::vector<float> s((size_t)2 * hq * 700), a((size_t)2 * hq * 64), o(a.size());
      REQUIRE(packkv_attn_scores(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, s.data(), 700, nullptr, 0, nullptr) ==
              PACKKV_OK);
      REQUIRE(packkv_attn_apply(c, 2, ids, hq, probs.data(), 700, a.data(), nullptr, 0, nullptr) == PACKKV_OK);
      REQUIRE(packkv_attn_decode(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, 0.125f, o.data(), nullptr, nullptr, 0,
                                 nullptr) == PACKKV_OK);
      for (int seq = 0; seq < 2; ++seq)  // seq 1 is shorter: its rows past 300 are not written
        for (int j = 0; j < hq; ++j)
          for (int t = seq ? 300 : 700; t < 700; ++t) s[((size_t)seq * hq + j) * 700 + t] = 0.0f;
      s.insert(s.end(), a.begin(), a.end());
      s.insert(s.end(), o.begin(), o.end());
      got.push_back(s);
    }
    packkv::set_cpu_isa_for_tests(before);
    for (size_t x = 1; x < got.size(); ++x) {
      std::vector<double> ref(got[0].begin(), got[0].end());
      INFO("bits " << bits << ", path " << x);
      CHECK(pkt::rel_l2(ref, got[x]) <= 1e-6);
    }
  }
}

#if defined(PACKKV_X86_SIMD)
namespace {
// The SIMD field reader is inlined into AVX2 code only.
PACKKV_AVX2 void read_fields_avx2_call(const uint8_t* p, int n, int w, const uint8_t* end, uint8_t* out) {
  packkv::simd::read_fields_avx2(p, n, w, end, out);
}
}  // namespace

TEST_CASE("round kernels: SIMD MINS / LENS field reads equal read_fields and read_field for widths 1..8") {
  if ((int)packkv::cpu_isa_supported() < (int)CpuIsa::kAvx2) return;  // the SIMD form needs AVX2
  std::mt19937 rng(9);
  for (int w = 1; w <= 8; ++w)
    for (int n : {16, 48, 256}) {
      INFO("width " << w << ", fields " << n);
      std::vector<uint8_t> bytes((size_t)n * w / 8, 0), want(n), got(n, 0xee), ref(n);
      for (int k = 0; k < n; ++k) {
        want[k] = (uint8_t)(rng() % (1u << w));
        packkv::fmt::write_field(bytes.data(), (size_t)k, w, want[k]);
      }
      // the stream ends exactly at the end of its buffer: nothing past it may be read (ASan)
      read_fields_avx2_call(bytes.data(), n, w, bytes.data() + bytes.size(), got.data());
      packkv::fmt::read_fields(bytes.data(), n, w, ref.data());
      bool ok = true;
      for (int k = 0; k < n; ++k)
        ok = ok && got[k] == want[k] && ref[k] == want[k] && packkv::fmt::read_field(bytes.data(), (size_t)k, w) == want[k];
      CHECK(ok);
    }
}
#endif

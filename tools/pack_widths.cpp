// What the candidate layouts of issue 14 (bench/RESULTS.md, "Layout study") would cost in
// size against today's tiles: the question behind the GPU backend's tensor-core step.
//   (a) today: one encode length L in 0..8 per pack (16 tokens x 1 channel);
//   (b) every L rounded up to {0, 1, 2, 4, 8}: the codes of a pack sit at fixed positions
//       (payload 2 L' bytes per pack; MINS and LENS unchanged);
//   (c) one width per 16-token x 16-channel tile: the largest L of its 16 packs (payload
//       16 * 2 Lmax bytes per tile; LENS hold D/16 fields of e bits instead of D, rounded
//       up to whole bytes per round); (c4) the same width rounded up to {0, 1, 2, 4, 8};
//   (d) bit-planes: the same bytes as (a), only the bit order inside a pack changes.
// The quantization (codes, scales, minimums) is identical in every candidate, so equal
// bytes compare at equal attention-output error.
//
// Encodes a real KV dump with the library's own CPU encoder (packkv_cache_append, median
// repacking, defaults otherwise), walks every compressed tile (format/round_cursor.h) and
// reports, for K and V: the histogram of encode lengths, the tile bytes as stored, and
// the tile bytes under (b), (c) and (c4); then the whole blob's change. The residual
// window is left out (it is not packed). The token permutation is the one chosen for (a)
// (it minimizes today's sizes, so (c) may be a little smaller with its own).
// Host program; links the internal library for read access to the blobs.
//
// Usage: packkv_pack_widths [--data FILE] [--layer N] [--rk R --rv R]
//   (default: data/smollm2_kv_sample.safetensors, every layer in it, r pairs 0.1/0.2,
//    0.05/0.1, 0.035/0.07, 0.025/0.05, 0.02/0.04). Each (rate, layer) also prints a line
//    "summary,layer,r_K,r_V,blob_bytes,grow_b,grow_c,grow_c4" (byte changes against (a)) and,
//    for K and V, "stats,layer,r_K,r_V,K|V,packs,hist[9],tiles16,tile16_hist[9],warp_slots,
//    slot_has[9],warps,warp_max_L" (read by bench/layout_study/cost_model.py).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "api/internal_access.h"
#include "packkv/packkv.h"
#include "format/round_cursor.h"
#include "format/shape.h"
#include "safetensors.h"

namespace {

// The allowed width for an encode length L (0..8): the smallest of {0, 1, 2, 4, 8} >= L.
int restricted(int L) { return L == 0 ? 0 : L == 1 ? 1 : L == 2 ? 2 : L <= 4 ? 4 : 8; }

struct Tally {
  long long packs = 0, hist[9] = {0}, tile_bytes = 0, payload_bytes = 0, restricted_payload = 0;
  long long lens_bytes = 0;                  // LENS of (a) and (b)
  long long tile16_payload = 0, tile16_restricted_payload = 0, tile16_lens_bytes = 0;  // (c), (c4)
  long long tile16_hist[9] = {0}, tile16s = 0;  // widths of 16 x 16 tiles under (c)
  // Divergence of a decode warp whose lane l owns channels 2l and 2l+1 of a round of 64
  // channels (D = 64: one round of one head): per lane slot j (channels 2l+j, l < 32),
  // how often each restricted width is present among the 32 lanes (b); the largest L
  // over the 64 channels (what a bit-plane loop over L runs, (d)).
  long long warp_slots = 0, slot_has[9] = {0}, warps = 0, warp_max_L = 0;
};

// Tallies the candidate layouts (b), (c), (c4) and the warp statistics of one round from
// its D encode lengths Ls (e bits per LENS field).
void tally_round(const int* Ls, int D, int e, Tally* out) {
  out->lens_bytes += static_cast<long long>(D * e / 8);
  out->tile16_lens_bytes += static_cast<long long>((D / 16 * e + 7) / 8);
  for (int c = 0; c < D; ++c) out->restricted_payload += 2 * restricted(Ls[c]);
  for (int c0 = 0; c0 < D; c0 += 16) {  // the 16 x 16 tile of channels c0..c0+15
    int mx = 0;
    for (int c = c0; c < c0 + 16; ++c) mx = Ls[c] > mx ? Ls[c] : mx;
    out->tile16_payload += 16 * 2 * mx;
    out->tile16_restricted_payload += 16 * 2 * restricted(mx);
    out->tile16_hist[mx]++;
    out->tile16s++;
  }
  for (int c0 = 0; c0 + 64 <= D; c0 += 64) {  // a warp of 32 lanes x 2 channels
    int mx = 0;
    for (int j = 0; j < 2; ++j) {
      bool has[9] = {false};
      for (int l = 0; l < 32; ++l) {
        const int L = Ls[c0 + 2 * l + j];
        has[restricted(L)] = true;
        mx = L > mx ? L : mx;
      }
      for (int w = 0; w <= 8; ++w) out->slot_has[w] += has[w];
      out->warp_slots++;
    }
    out->warps++;
    out->warp_max_L += mx;
  }
}

// Walks one tile's rounds; returns the bytes walked (the caller checks them against the
// blob's recorded tile size, so a misread layout cannot pass unnoticed).
size_t walk_tile(const uint8_t* t, int rounds, int D, int bits, Tally* out) {
  const int e = packkv::fmt::len_bits(bits);
  int Ls[packkv::fmt::kMaxHeadDim];
  packkv::fmt::RoundCursor cur(t, D, bits);
  for (int r = 0; r < rounds; ++r, cur.next_round()) {
    size_t payload = 0;
    for (int c = 0; c < D; ++c) {
      const int L = cur.next_pack(c).length;
      out->hist[L]++;
      out->packs++;
      payload += 2u * L;
      Ls[c] = L;
    }
    tally_round(Ls, D, e, out);
    out->payload_bytes += static_cast<long long>(payload);
  }
  out->tile_bytes += static_cast<long long>(cur.round_offset());
  return cur.round_offset();
}

int run(const packkv_eval::SafeTensors& st, const std::string& layer, float rk, float rv) {
  const packkv_eval::Tensor& K = st.tensors.at("layer." + layer + ".k");
  const packkv_eval::Tensor& V = st.tensors.at("layer." + layer + ".v");
  if (K.dtype != "F16" || V.dtype != "F16" || K.shape.size() != 3 || K.shape != V.shape) {
    std::fprintf(stderr, "layer %s: expected F16 k and v of one shape [T][H][D]\n", layer.c_str());
    return 1;
  }
  packkv_cache_params_t p;
  packkv_cache_params_init(&p, sizeof p);
  p.device = -1;
  p.n_kv_heads = static_cast<int32_t>(K.shape[1]);
  p.head_dim = static_cast<int32_t>(K.shape[2]);
  p.max_seqs = 1;
  p.max_tokens_per_seq = K.shape[0];
  p.rel_scale_k = rk;
  p.rel_scale_v = rv;
  packkv_cache_t* c = nullptr;
  if (packkv_cache_create(&p, &c) != PACKKV_OK) {
    std::fprintf(stderr, "create: %s\n", packkv_last_error_message());
    return 1;
  }
  const int32_t id = 0, n = static_cast<int32_t>(K.shape[0]);
  if (packkv_cache_append(c, 1, &id, &n, K.bytes.data(), V.bytes.data(), PACKKV_DTYPE_F16, nullptr) != PACKKV_OK) {
    std::fprintf(stderr, "append: %s\n", packkv_last_error_message());
    packkv_cache_destroy(c);
    return 1;
  }
  packkv_cache_params_t used;
  packkv_cache_params_init(&used, sizeof used);
  packkv_cache_get_params(c, &used);
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  const packkv::fmt::Shape& sh = impl.config().shape;
  const int H = sh.n_kv_heads, D = sh.head_dim, N = sh.block_tokens;
  Tally tk, tv;
  long long blob_bytes = 0;
  const int64_t nb = impl.n_blocks(0);
  for (int64_t b = 0; b < nb; ++b) {
    const std::vector<uint8_t> blob = impl.block_bytes(0, b);
    blob_bytes += static_cast<long long>(blob.size());
    for (int t = 0; t < 2 * H; ++t) {
      size_t off = 0, sz = 0;
      sh.tile_extent(blob.data(), t < H ? packkv::fmt::kK : packkv::fmt::kV, t % H, &off, &sz);
      const size_t walked = walk_tile(blob.data() + off, sh.rounds(), D, sh.bits(t < H ? 0 : 1), t < H ? &tk : &tv);
      if (walked != sz) {
        std::fprintf(stderr, "block %lld tile %d: walked %zu bytes, the blob records %zu\n",
                     static_cast<long long>(b), t, walked, sz);
        packkv_cache_destroy(c);
        return 1;
      }
    }
  }
  packkv_cache_destroy(c);
  // Byte changes against (a) of one tally under (b), (c), (c4).
  auto grow_b = [](const Tally& x) { return x.restricted_payload - x.payload_bytes; };
  auto grow_c = [](const Tally& x) { return x.tile16_payload + x.tile16_lens_bytes - x.payload_bytes - x.lens_bytes; };
  auto grow_c4 = [](const Tally& x) {
    return x.tile16_restricted_payload + x.tile16_lens_bytes - x.payload_bytes - x.lens_bytes;
  };
  auto line = [&](const char* name, const Tally& x, int bits) {
    std::printf("  %s (b = %d): L histogram", name, bits);
    for (int L = 0; L <= 8; ++L)
      if (L <= bits) std::printf(" %d:%.1f%%", L, 100.0 * x.hist[L] / (x.packs ? x.packs : 1));
    std::printf("\n      16x16-tile width histogram (c)");
    for (int L = 0; L <= 8; ++L)
      if (L <= bits) std::printf(" %d:%.1f%%", L, 100.0 * x.tile16_hist[L] / (x.tile16s ? x.tile16s : 1));
    const double ws = static_cast<double>(x.warp_slots ? x.warp_slots : 1);
    std::printf("\n      warp slots with width present (b) 0:%.1f%% 1:%.1f%% 2:%.1f%% 4:%.1f%% 8:%.1f%%; mean max L "
                "over a 64-channel warp (d) %.2f",
                100.0 * x.slot_has[0] / ws, 100.0 * x.slot_has[1] / ws, 100.0 * x.slot_has[2] / ws,
                100.0 * x.slot_has[4] / ws, 100.0 * x.slot_has[8] / ws,
                static_cast<double>(x.warp_max_L) / (x.warps ? x.warps : 1));
    const double tb = static_cast<double>(x.tile_bytes ? x.tile_bytes : 1);
    std::printf("\n      tile bytes %lld, payload %lld; restricted payload %lld: tiles (b) %+.1f%%, (c) %+.1f%%, "
                "(c4) %+.1f%%\n",
                x.tile_bytes, x.payload_bytes, x.restricted_payload, 100.0 * grow_b(x) / tb, 100.0 * grow_c(x) / tb,
                100.0 * grow_c4(x) / tb);
  };
  const long long grow = grow_b(tk) + grow_b(tv);
  std::printf("layer %s, r_K %.3g, r_V %.3g: %lld blocks of %d tokens, H %d, D %d\n", layer.c_str(), rk, rv,
              static_cast<long long>(nb), N, H, D);
  line("K", tk, used.bits_k);
  line("V", tv, used.bits_v);
  const long long gc = grow_c(tk) + grow_c(tv), gc4 = grow_c4(tk) + grow_c4(tv);
  std::printf("  blobs %lld bytes (tiles, scales, zero points, perm); against (a): (b) %+.1f%%, (c) %+.1f%%, "
              "(c4) %+.1f%%, (d) +0.0%%\n",
              blob_bytes, 100.0 * grow / blob_bytes, 100.0 * gc / blob_bytes, 100.0 * gc4 / blob_bytes);
  std::printf("  summary,%s,%.3g,%.3g,%lld,%lld,%lld,%lld\n", layer.c_str(), rk, rv, blob_bytes, grow, gc, gc4);
  for (int kv = 0; kv < 2; ++kv) {  // width statistics for bench/layout_study/cost_model.py
    const Tally& x = kv == 0 ? tk : tv;
    std::printf("  stats,%s,%.3g,%.3g,%c,%lld", layer.c_str(), rk, rv, kv == 0 ? 'K' : 'V', x.packs);
    for (long long h : x.hist) std::printf(",%lld", h);
    std::printf(",%lld", x.tile16s);
    for (long long h : x.tile16_hist) std::printf(",%lld", h);
    std::printf(",%lld", x.warp_slots);
    for (long long h : x.slot_has) std::printf(",%lld", h);
    std::printf(",%lld,%lld\n", x.warps, x.warp_max_L);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = std::string(PACKKV_DATA_DIR) + "/smollm2_kv_sample.safetensors", layer;
  std::vector<std::pair<float, float>> rs;
  float rk = -1.f, rv = -1.f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) data = argv[++i];
    else if (a == "--layer" && i + 1 < argc) layer = argv[++i];
    else if (a == "--rk" && i + 1 < argc) rk = std::strtof(argv[++i], nullptr);
    else if (a == "--rv" && i + 1 < argc) rv = std::strtof(argv[++i], nullptr);
    else {
      std::fprintf(stderr, "usage: %s [--data FILE] [--layer N] [--rk R --rv R]\n", argv[0]);
      return 2;
    }
  }
  if ((rk > 0.f) != (rv > 0.f)) {
    std::fprintf(stderr, "give both --rk and --rv, or neither\n");
    return 2;
  }
  if (rk > 0.f) rs.push_back({rk, rv});
  else rs = {{0.1f, 0.2f}, {0.05f, 0.1f}, {0.035f, 0.07f}, {0.025f, 0.05f}, {0.02f, 0.04f}};
  const packkv_eval::SafeTensors st = packkv_eval::read_safetensors(data);
  std::vector<std::string> layers;
  if (!layer.empty()) {
    layers.push_back(layer);
  } else {
    std::set<int> found;
    for (const auto& kv : st.tensors) {
      const std::string& name = kv.first;
      if (name.rfind("layer.", 0) == 0 && name.size() > 2 && name.compare(name.size() - 2, 2, ".k") == 0)
        found.insert(std::atoi(name.c_str() + 6));
    }
    for (int l : found) layers.push_back(std::to_string(l));
  }
  for (const auto& r : rs)
    for (const std::string& l : layers)
      if (run(st, l, r.first, r.second) != 0) return 1;
  return 0;
}

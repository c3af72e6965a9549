// What restricting the encode lengths of packs to a few widths would cost in size: the
// question behind the GPU backend's next step (bench/RESULTS.md, "Bottlenecks and next
// steps" 2). With L in {0, 1, 2, 4, 8} the codes of a pack sit at fixed positions, so one
// LOP3 could place two of them in an fp16 pair; today L is any of 0..8.
//
// Encodes a real KV dump with the library's own CPU encoder (packkv_cache_append, median
// repacking, defaults otherwise), walks every compressed tile (format/round_cursor.h) and
// reports, for K and V: the histogram of encode lengths, the tile bytes as stored, and
// the tile bytes if every L were rounded up to the next allowed width (payload 2 L bytes
// per pack; MINS and LENS unchanged). The residual window is left out (it is not packed).
// Host program; links the internal library for read access to the blobs (a tool, not a
// benchmark: it times nothing).
//
// Usage: packkv_pack_widths [--data FILE] [--layer N] [--rk R --rv R]
//   (default: data/smollm2_kv_sample.safetensors, every layer in it, r pairs 0.1/0.2,
//    0.05/0.1, 0.02/0.04)
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
};

// Walks one tile's rounds; returns the bytes walked (the caller checks them against the
// blob's recorded tile size, so a misread layout cannot pass unnoticed).
size_t walk_tile(const uint8_t* t, int rounds, int D, int bits, Tally* out) {
  packkv::fmt::RoundCursor cur(t, D, bits);
  for (int r = 0; r < rounds; ++r, cur.next_round()) {
    size_t payload = 0;
    for (int c = 0; c < D; ++c) {
      const int L = cur.next_pack(c).length;
      out->hist[L]++;
      out->packs++;
      payload += 2u * L;
      out->restricted_payload += 2 * restricted(L);
    }
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
  auto line = [&](const char* name, const Tally& x, int bits) {
    std::printf("  %s (b = %d): L histogram", name, bits);
    for (int L = 0; L <= 8; ++L)
      if (L <= bits) std::printf(" %d:%.1f%%", L, 100.0 * x.hist[L] / (x.packs ? x.packs : 1));
    const long long grow = x.restricted_payload - x.payload_bytes;
    std::printf("\n      tile bytes %lld, payload %lld; restricted payload %lld: tiles +%.1f%%\n", x.tile_bytes,
                x.payload_bytes, x.restricted_payload, 100.0 * grow / (x.tile_bytes ? x.tile_bytes : 1));
  };
  const long long grow = (tk.restricted_payload - tk.payload_bytes) + (tv.restricted_payload - tv.payload_bytes);
  std::printf("layer %s, r_K %.3g, r_V %.3g: %lld blocks of %d tokens, H %d, D %d\n", layer.c_str(), rk, rv,
              static_cast<long long>(nb), N, H, D);
  line("K", tk, used.bits_k);
  line("V", tv, used.bits_v);
  std::printf("  blobs %lld bytes (tiles, scales, zero points, perm); restricted widths: +%.1f%% "
              "(compression ratio x%.3f)\n",
              blob_bytes, 100.0 * grow / blob_bytes, static_cast<double>(blob_bytes) / (blob_bytes + grow));
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
  else rs = {{0.1f, 0.2f}, {0.05f, 0.1f}, {0.02f, 0.04f}};
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

#include "format/blob_check.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "format/affine.h"
#include "format/round_cursor.h"
#include "format/shape.h"

namespace packkv {

namespace {

// Builds a failed BlobCheck.
BlobCheck bad(const std::string& what) {
  BlobCheck r;
  r.ok = false;
  r.error = "block blob: " + what;
  return r;
}

// Reads a little-endian uint32 at byte offset `at` without alignment requirements.
uint32_t load_u32(const uint8_t* p, size_t at) {
  uint32_t v;
  std::memcpy(&v, p + at, 4);
  return v;
}

// Smallest and largest code of one stored token slot (over the channels seen so far).
struct CodeRange {
  uint32_t lo = 255, hi = 0;
};

// Checks one tile of `size` bytes (K or V of one head); empty string when well-formed.
// Widens range[slot] by the codes of each stored token slot.
std::string check_tile(const uint8_t* tile, size_t size, int n_tokens, int head_dim, int bits, CodeRange* range) {
  const uint32_t qmax = (1u << bits) - 1u;
  fmt::RoundCursor cur(tile, head_dim, bits);
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r, cur.next_round()) {
    const size_t at = cur.round_offset();
    if (size - at < cur.header_bytes())
      return "round " + std::to_string(r) + ": MINS/LENS need " + std::to_string(cur.header_bytes()) +
             " bytes at tile offset " + std::to_string(at) + ", tile has " + std::to_string(size);
    for (int ch = 0; ch < head_dim; ++ch) {
      const uint32_t L = (uint32_t)cur.channel_length(ch);
      const size_t payload = cur.pack_offset();
      if (L > (uint32_t)bits)
        return "round " + std::to_string(r) + ", channel " + std::to_string(ch) + ": encode length " +
               std::to_string(L) + " exceeds the code width " + std::to_string(bits);
      if (size - payload < 2 * (size_t)L)
        return "round " + std::to_string(r) + ", channel " + std::to_string(ch) + ": pack of " +
               std::to_string(2 * L) + " bytes at tile offset " + std::to_string(payload) +
               " runs past the tile end " + std::to_string(size);
      const fmt::Pack pk = cur.next_pack(ch);
      uint64_t lo = 0, hi = 0;
      if (L > 0) fmt::read_pack_halves(pk.bytes, (int)L, &lo, &hi);
      for (int i = 0; i < fmt::kPackTokens; ++i) {
        const uint32_t code = pk.min + fmt::pack_offset(lo, hi, (int)L, i);
        if (code > qmax)
          return "round " + std::to_string(r) + ", channel " + std::to_string(ch) + ", token " + std::to_string(i) +
                 ": code " + std::to_string(code) + " does not fit " + std::to_string(bits) + " bits";
        CodeRange& cr = range[r * fmt::kPackTokens + i];
        cr.lo = code < cr.lo ? code : cr.lo;
        cr.hi = code > cr.hi ? code : cr.hi;
      }
    }
  }
  if (cur.round_offset() != size)
    return "rounds end at tile offset " + std::to_string(cur.round_offset()) + " but the tile has " +
           std::to_string(size) + " bytes";
  return std::string();
}

// Checks the zero points and scales of K or V ([scale_groups][n] zero points, then [scale_groups][n]
// scales, wide or compact encoding): every scale finite, and every code the tiles hold
// for a token dequantizes to a finite value. range[g * n + slot] holds the code extremes
// of group g, stored slot. (q + z) * s is monotonic in q, so the extremes decide.
std::string check_affine(const uint8_t* zero, const uint8_t* scale, bool wide, int scale_groups, int n,
                         const CodeRange* range, const char* what) {
  for (size_t i = 0; i < (size_t)scale_groups * n; ++i) {
    const fmt::Affine a = fmt::load_affine(zero, scale, wide, i);
    if (!std::isfinite(a.scale)) return std::string(what) + " scale " + std::to_string(i) + " is not finite";
    if (!std::isfinite(fmt::dequantize(range[i].lo, a)) || !std::isfinite(fmt::dequantize(range[i].hi, a)))
      return std::string(what) + " zero point " + std::to_string(a.zero) + " and scale " + std::to_string(a.scale) +
             " (entry " + std::to_string(i) + ") dequantize codes " + std::to_string(range[i].lo) + ".." +
             std::to_string(range[i].hi) + " to non-finite values";
  }
  return std::string();
}

}  // namespace

BlobCheck validate_blob(const fmt::Shape& sh, const uint8_t* blob, size_t size) {
  const int h = sh.n_kv_heads, d = sh.head_dim, n = sh.block_tokens;
  if (!fmt::shape_valid(sh)) return bad("the configuration does not describe a valid format");
  if (blob == nullptr) return bad("NULL pointer");
  if (reinterpret_cast<uintptr_t>(blob) % 4 != 0) return bad("not 4-byte aligned");

  const int scale_groups = sh.scale_groups;
  const fmt::BlockLayout& l = sh.layout;
  if (size < l.tiles_at)
    return bad(std::to_string(size) + " bytes, shorter than its fixed part (" + std::to_string(l.tiles_at) +
               " bytes: tile_end, perm, zero points, scales)");

  // tile_end: non-decreasing, and the last one ends the blob exactly.
  uint32_t prev = 0;
  for (int t = 0; t < 2 * h; ++t) {
    const uint32_t end = load_u32(blob, 4 * (size_t)t);
    if (end < prev)
      return bad("tile_end[" + std::to_string(t) + "] = " + std::to_string(end) + " is smaller than tile_end[" +
                 std::to_string(t - 1) + "] = " + std::to_string(prev));
    prev = end;
  }
  // A compact block written wide fallback (marker in its first K scale field) has its
  // compact fields zero but the marker, and its wide fields after the tiles.
  const size_t meta_bytes = l.tiles_at - l.k_zero_at;
  const bool fallback = sh.zs == fmt::ZsFormat::kCompact && sh.zs_wide(blob);
  const uint64_t tiles_end = (uint64_t)l.tiles_at + prev;
  const uint64_t expect = fallback ? ((tiles_end + 3) & ~(uint64_t)3) + sh.wide_zs_bytes() : tiles_end;
  if (expect != (uint64_t)size)
    return bad(std::string(fallback ? "a wide fallback block" : "tiles") + " end at byte " + std::to_string(expect) +
               " but the blob has " + std::to_string(size) + " bytes");
  if (fallback) {
    for (size_t at = l.k_zero_at; at < l.k_zero_at + meta_bytes; ++at) {
      const bool marker = at == l.k_scale_at || at == l.k_scale_at + 1;
      if (blob[at] != (marker ? 0xFF : 0))
        return bad("wide fallback block: compact field byte " + std::to_string(at) + " is neither zero nor the marker");
    }
    for (uint64_t i = tiles_end; i < sh.wide_zs_at(blob); ++i)
      if (blob[i] != 0) return bad("padding byte " + std::to_string(i) + " is not zero");
  }

  // perm and padding.
  const size_t perm_end = l.perm_at + (sh.has_perm ? (size_t)n : 0);
  for (size_t i = perm_end; i < l.k_zero_at; ++i)
    if (blob[i] != 0) return bad("padding byte " + std::to_string(i) + " is not zero");
  if (sh.has_perm) {
    bool seen[fmt::kMaxBlockTokens] = {};
    for (int j = 0; j < n; ++j) {
      const uint8_t p = blob[l.perm_at + j];
      if (p >= n || seen[p])
        return bad("perm[" + std::to_string(j) + "] = " + std::to_string(p) + " makes perm not a permutation of 0.." +
                   std::to_string(n - 1));
      seen[p] = true;
    }
  }

  // tiles, collecting the code extremes of every (group, stored slot), then the zero
  // points and scales against them.
  std::vector<CodeRange> range[2] = {std::vector<CodeRange>((size_t)scale_groups * n),
                                     std::vector<CodeRange>((size_t)scale_groups * n)};
  for (int t = 0; t < 2 * h; ++t) {
    const uint32_t begin = t == 0 ? 0u : load_u32(blob, 4 * (size_t)(t - 1));
    const uint32_t end = load_u32(blob, 4 * (size_t)t);
    const bool is_k = t < h;
    const int head = is_k ? t : t - h;
    const std::string err = check_tile(blob + l.tiles_at + begin, end - begin, n, d, is_k ? sh.bits_k : sh.bits_v,
                                       range[is_k ? 0 : 1].data() + (scale_groups == 1 ? 0 : (size_t)head * n));
    if (!err.empty()) return bad(std::string(is_k ? "K" : "V") + " tile of head " + std::to_string(head) + ": " + err);
  }
  std::string err;
  for (int kv = 0; kv < 2 && err.empty(); ++kv) {
    const uint8_t *zero = nullptr, *scale = nullptr;
    bool wide = false;
    sh.zs_fields(blob, kv, 0, &zero, &scale, &wide);
    err = check_affine(zero, scale, wide, scale_groups, n, range[kv].data(), kv == 0 ? "K" : "V");
  }
  if (!err.empty()) return bad(err);

  BlobCheck ok;
  ok.ok = true;
  return ok;
}

}  // namespace packkv

// The residual window of one CPU sequence (cpu_cache.h): its tokens in kv_dtype, K and V,
// in a ring of whole blocks, so that a flush, which removes whole blocks from the window's
// front, moves no token (a std::vector erased at its front moved the remaining window,
// ~2 x 256 KB for 8 KV heads x 128, at every flush).
//
// Layout: one buffer, K then V, each capacity_blocks() slots of block_tokens tokens
// ([2][slot][block_tokens][H][D] in kv_dtype; 56 bytes of record, as the two vectors and the
// length it replaces: packkv.h documents the per-slot cost of a CPU cache). Window token t lives in slot
// (head + t / block_tokens) % capacity_blocks(), row t % block_tokens: the window always
// starts at a slot's first row (tokens leave it only by whole blocks from the front, or
// from its end), so every block of the window is contiguous, and a token range is at most
// two contiguous runs (split where the ring wraps).
// Capacity grows on demand (doubling, up to the blocks that residual_tokens + block_tokens
// tokens take, or more when more are asked for: an import may bring a longer window);
// growing lays the window out again from slot 0 (the only time tokens move).
// Not thread-safe by itself: the cache serializes changes; const members only read.
#ifndef PACKKV_CPU_RESIDUAL_RING_H
#define PACKKV_CPU_RESIDUAL_RING_H

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace packkv {

class ResidualRing {
 public:
  // Tokens in the window.
  int64_t len() const { return len_; }
  // Bytes of the window's tokens, K and V (what the stats count as residual bytes).
  size_t used_bytes() const { return 2 * (size_t)len_ * tb_; }
  int64_t capacity_blocks() const { return cap_; }

  // Token t (< len(), or < the room reserve() made) of K (kv 0) or V (kv 1).
  const uint8_t* token(int kv, int64_t t) const { return buf(kv) + offset(t); }

  // Calls f(t, m) for the contiguous runs [t, t + m) covering [first, first + n) of the
  // window, in order (token(kv, t) .. token(kv, t + m - 1) adjacent in memory).
  template <typename F>
  void runs(int64_t first, int64_t n, F f) const {
    while (n > 0) {
      const int64_t slot = (head_ + first / bt_) % cap_;
      const int64_t m = std::min(n, (cap_ - slot) * bt_ - first % bt_);  // to the ring's end
      f(first, m);
      first += m;
      n -= m;
    }
  }

  // Copies tokens [first, first + n) of K or V to dst ([n][H][D]).
  void copy_out(int kv, int64_t first, int64_t n, uint8_t* dst) const {
    runs(first, n, [&](int64_t t, int64_t m) {
      std::memcpy(dst + (size_t)(t - first) * tb_, token(kv, t), (size_t)m * tb_);
    });
  }

  // True when holding `tokens` tokens needs a larger buffer (reserve then moves tokens).
  bool needs_growth(int64_t tokens) const { return tokens > cap_ * bt_; }

  // Room for `tokens` tokens (>= len()) of token_bytes bytes each, in slots of block_tokens;
  // usual_blocks: the slots residual_tokens + block_tokens tokens take (the growth target).
  // May throw (allocation); leaves the window unchanged either way. token_bytes and
  // block_tokens never change for a ring that holds tokens.
  void reserve(int64_t tokens, size_t token_bytes, int block_tokens, int64_t usual_blocks) {
    tb_ = (uint32_t)token_bytes;
    bt_ = block_tokens;
    if (!needs_growth(tokens)) return;
    const int64_t need = (tokens + bt_ - 1) / bt_;
    const int64_t cap = std::max(need, std::min(2 * cap_, usual_blocks));
    const size_t half = (size_t)(cap * bt_) * tb_;
    std::vector<uint8_t> b(2 * half);
    copy_out(0, 0, len_, b.data());
    copy_out(1, 0, len_, b.data() + half);
    buf_.swap(b);
    cap_ = cap;
    head_ = 0;
  }

  // Appends n tokens (k, v: [n][H][D]); the room is reserved. No throw.
  void push(const uint8_t* k, const uint8_t* v, int64_t n) {
    const int64_t first = len_;
    len_ += n;
    runs(first, n, [&](int64_t t, int64_t m) {
      std::memcpy(buf_.data() + offset(t), k + (size_t)(t - first) * tb_, (size_t)m * tb_);
      std::memcpy(buf_.data() + buf_.size() / 2 + offset(t), v + (size_t)(t - first) * tb_, (size_t)m * tb_);
    });
  }

  // Removes the first `blocks` whole blocks (blocks * block_tokens <= len()). No throw.
  void pop_blocks(int64_t blocks) {
    if (blocks == 0) return;
    len_ -= blocks * bt_;
    head_ = len_ == 0 ? 0 : (head_ + blocks) % cap_;
  }

  // Keeps the first n <= len() tokens. No throw.
  void shrink(int64_t n) {
    len_ = n;
    if (len_ == 0) head_ = 0;
  }

 private:
  size_t offset(int64_t t) const { return (size_t)(((head_ + t / bt_) % cap_) * bt_ + t % bt_) * tb_; }
  const uint8_t* buf(int kv) const { return buf_.data() + (kv == 0 ? 0 : buf_.size() / 2); }

  std::vector<uint8_t> buf_;  // K then V, each [cap_][bt_][H][D] in kv_dtype
  int64_t len_ = 0;           // tokens in the window
  int64_t cap_ = 0;           // slots
  int64_t head_ = 0;          // slot of window token 0
  uint32_t tb_ = 0;           // bytes per token (H * D * element bytes)
  int32_t bt_ = 1;            // tokens per slot (block_tokens)
};

}  // namespace packkv

#endif  // PACKKV_CPU_RESIDUAL_RING_H

// Placement of a sequence's blobs in its device pages (the CUDA backend; cuda_cache.h),
// shared by the flush kernel (which knows the blob sizes) and the host (which bounds
// where the device can be without waiting for it). Host and device (PACKKV_HD).
//
// A sequence has a page list; PlaceState says where its next blob goes: `page` indexes
// the list (-1: none yet) and `fill` bytes of that page are taken. Blobs are placed
// next-fit in block order: at the 16-aligned fill if the blob fits below the page's
// capacity `cap`, else at offset 0 of the next page of the list (place_next).
// Next-fit is monotone: with every blob no larger than `worst` (a multiple of 16), the
// state after any blobs is at or before (place_le) the state after as many blobs of
// `worst` bytes from the same or a later state (worst_after), so the host provisions pages
// for the worst case and the device never runs past them (tests/host/test_placement.cpp).
#ifndef PACKKV_POOL_PLACEMENT_H
#define PACKKV_POOL_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/hd.h"

namespace packkv {

struct PlaceState {
  int page;
  unsigned fill;
};

// Places a blob of `bytes` (<= cap) after state s; returns its offset in page s->page.
PACKKV_HD size_t place_next(PlaceState* s, size_t bytes, size_t cap) {
  size_t at = (static_cast<size_t>(s->fill) + 15) & ~static_cast<size_t>(15);
  if (s->page < 0 || at + bytes > cap) {
    ++s->page;
    at = 0;
  }
  s->fill = static_cast<unsigned>(at + bytes);
  return at;
}

// a is at or before b (lexicographic: page, then fill).
PACKKV_HD bool place_le(const PlaceState& a, const PlaceState& b) {
  return a.page < b.page || (a.page == b.page && a.fill <= b.fill);
}

// The state after n blobs of `worst` bytes (a multiple of 16, <= cap) from `from`, in
// closed form (what n place_next calls give).
PACKKV_HD PlaceState worst_after(PlaceState from, int64_t n, size_t worst, size_t cap) {
  if (n <= 0) return from;
  const size_t start = (static_cast<size_t>(from.fill) + 15) & ~static_cast<size_t>(15);
  const int64_t per_page = static_cast<int64_t>((cap - worst) / worst + 1);
  int64_t room = 0;  // worst blobs that still fit in the current page
  if (from.page >= 0 && start + worst <= cap) room = static_cast<int64_t>((cap - start - worst) / worst + 1);
  if (n <= room) return PlaceState{from.page, static_cast<unsigned>(start + static_cast<size_t>(n) * worst)};
  n -= room;
  const int64_t pages = (n + per_page - 1) / per_page, last = n - (pages - 1) * per_page;
  return PlaceState{from.page + static_cast<int>(pages), static_cast<unsigned>(static_cast<size_t>(last) * worst)};
}

}  // namespace packkv

#endif  // PACKKV_POOL_PLACEMENT_H

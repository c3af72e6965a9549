// The block table of one CPU sequence: where each compressed block's blob sits in the
// pages of the cache's pool, and the sequence's open page (the one its next blobs are
// written into, at open_fill). Blobs never move once placed.
//
// Placement: a blob goes at align16(open_fill) of the open page if it fits there, else
// at offset 0 of a new page, which becomes the open page (the previous one keeps its
// blocks; its unused end is the page-end waste measured in bench/RESULTS.md). Only the
// sequence whose open page it is writes into a page, so sharing blocks with forked
// sequences needs no copy-on-write: a fork starts without an open page.
//
// References (pool/page_pool.h): one per block entry, one for the open page. Every
// method that can fail does so before changing anything; the others never throw.
#ifndef PACKKV_CPU_PAGE_TABLE_H
#define PACKKV_CPU_PAGE_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/rules.h"
#include "pool/page_pool.h"

namespace packkv {

struct BlockRef {
  Page* page;
  uint32_t offset;  // kBlobAlign-aligned start of the blob in the page
  uint32_t bytes;   // blob size
};

// Where the blobs of one append go: offsets in the open page or in new pages.
struct Placement {
  struct Slot {
    int64_t new_page;  // -1: the current open page; else index among the new pages
    uint32_t offset;
  };
  std::vector<Slot> slots;
  size_t new_pages = 0;
  size_t fill_after = 0;
};

class PageTable {
 public:
  // Blocks are numbered from the sequence's start; the first first_live() of them have
  // been freed (sliding window: drop_front) and have no blob.
  int64_t n_blocks() const { return base_ + (int64_t)blocks_.size(); }
  int64_t first_live() const { return base_; }
  const BlockRef& block(int64_t b) const { return blocks_[b - base_]; }
  const uint8_t* blob(int64_t b) const {
    return b < base_ ? nullptr : blocks_[b - base_].page->data + blocks_[b - base_].offset;
  }
  const Page* open_page() const { return open_; }
  size_t open_fill() const { return open_fill_; }  // bytes written into the open page
  size_t table_capacity_bytes() const { return blocks_.capacity() * sizeof(BlockRef); }

  // Placement of blobs of these sizes (each <= page_bytes). Pure.
  Placement plan(const std::vector<size_t>& sizes, size_t page_bytes) const {
    Placement pl;
    int64_t page = open_ ? -1 : -2;  // -2: no page yet
    size_t fill = open_fill_;
    for (size_t z : sizes) {
      size_t at = align16(fill);
      if (page == -2 || at + z > page_bytes) {
        page = (int64_t)pl.new_pages++;
        at = 0;
      }
      pl.slots.push_back({page, (uint32_t)at});
      fill = at + z;
    }
    pl.fill_after = fill;
    return pl;
  }
  // Room for `more` block entries (geometric growth; may throw, changes no content).
  void reserve(size_t more) {
    const size_t need = blocks_.size() + more;
    if (blocks_.capacity() < need) blocks_.reserve(std::max(need, 2 * blocks_.capacity()));
  }
  // Copies the blobs to their slots: blob i of `blobs` starts at the 16-aligned end of
  // blob i - 1 (the first at 0), sizes[i] bytes. `pages` are the plan's new pages, each
  // holding the one reference acquire() gave it (it becomes the open-page reference;
  // a page left behind gives it up). Needs reserve(sizes.size()) first. No throw.
  void commit(const Placement& pl, const uint8_t* blobs, const std::vector<size_t>& sizes, Page* const* pages,
              PagePool* pool) noexcept {
    size_t pos = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Placement::Slot& s = pl.slots[i];
      if (s.new_page >= 0 && pages[s.new_page] != open_) {
        if (open_) pool->release(open_);
        open_ = pages[s.new_page];  // acquire()'s reference is the open-page one
      }
      std::memcpy(open_->data + s.offset, blobs + pos, sizes[i]);
      pos = align16(pos + sizes[i]);
      PagePool::retain(open_);
      blocks_.push_back({open_, s.offset, (uint32_t)sizes[i]});
    }
    open_fill_ = pl.fill_after;
  }
  // Drops blocks [keep, n_blocks). Then the write position goes back as far as nothing
  // else references: an open page left without blocks of this table is given back, and
  // the page of the table's last block becomes the open page again when no other
  // sequence references it; the open page is rewound to the end of the table's last
  // block in it when no other sequence references it. So a rollback followed by new
  // appends reuses the freed bytes. No throw.
  void drop_from(int64_t keep, PagePool* pool) noexcept {
    keep = std::max<int64_t>(0, keep - base_);
    while ((int64_t)blocks_.size() > keep) {
      pool->release(blocks_.back().page);
      blocks_.pop_back();
    }
    size_t end = 0;
    int64_t mine = open_ ? tail_blocks_in(open_, &end) : 0;
    if (open_ && mine == 0 && open_->refs.load(std::memory_order_acquire) == 1) {
      pool->release(open_);
      open_ = nullptr;
      open_fill_ = 0;
    }
    if (!open_ && !blocks_.empty()) {
      Page* last = blocks_.back().page;
      mine = tail_blocks_in(last, &end);
      if (last->refs.load(std::memory_order_acquire) != mine) return;
      PagePool::retain(last);
      open_ = last;
    }
    if (open_ && open_->refs.load(std::memory_order_acquire) == mine + 1) open_fill_ = end;
  }
  // Frees blocks [first_live, end) from the front (their numbers stay taken). No throw.
  void drop_front(int64_t end, PagePool* pool) noexcept {
    const int64_t n = std::min<int64_t>(end - base_, (int64_t)blocks_.size());
    if (n <= 0) return;
    for (int64_t i = 0; i < n; ++i) pool->release(blocks_[i].page);
    blocks_.erase(blocks_.begin(), blocks_.begin() + n);  // no throw: BlockRef is trivial
    base_ += n;
  }
  // Numbers the blocks of an empty table from `first` (an imported sequence whose first
  // blocks were freed). No throw.
  void set_first_live(int64_t first) noexcept { base_ = first; }
  // Releases everything (blocks and open page). No throw.
  void clear(PagePool* pool) noexcept {
    drop_from(0, pool);
    if (open_) pool->release(open_);
    open_ = nullptr;
    open_fill_ = 0;
    base_ = 0;
    std::vector<BlockRef>().swap(blocks_);
  }
  // This table (empty) takes references to every block of `src`; no open page. Needs
  // reserve(src.n_blocks()) first. No throw. (Freed front blocks stay freed.)
  void share_from(const PageTable& src) noexcept {
    base_ = src.base_;
    for (const BlockRef& r : src.blocks_) {
      PagePool::retain(r.page);
      blocks_.push_back(r);
    }
  }

 private:
  // Blocks of this table in page p (always its last ones) and the end of the last.
  int64_t tail_blocks_in(const Page* p, size_t* end) const {
    int64_t n = 0;
    *end = 0;
    for (int64_t b = (int64_t)blocks_.size() - 1; b >= 0 && blocks_[b].page == p; --b) {
      ++n;
      *end = std::max(*end, (size_t)blocks_[b].offset + blocks_[b].bytes);
    }
    return n;
  }

  std::vector<BlockRef> blocks_;  // live blocks: numbers base_ .. base_ + size - 1
  int64_t base_ = 0;
  Page* open_ = nullptr;
  size_t open_fill_ = 0;
};

}  // namespace packkv

#endif  // PACKKV_CPU_PAGE_TABLE_H

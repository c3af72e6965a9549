// CpuCache export and import of one sequence in the byte format of format/seq_export.h
// (laid out and validated by api/seq_export_io.h). Import validates everything before it
// changes anything.
#include <cstring>
#include <utility>
#include <vector>

#include "api/seq_export_io.h"
#include "common/rules.h"
#include "cpu/cpu_cache.h"
#include "format/seq_export.h"

namespace packkv {

size_t CpuCache::export_size(int seq) const {
  const CpuSeq& s = seqs_[seq];
  size_t n = fmt::kSeqHeaderBytes;
  for (int64_t b = s.table.first_live(); b < s.n_blocks(); ++b) n += fmt::seq_block_record(s.table.block(b).bytes);
  return n + s.res.used_bytes() + s.sink_k.size() + s.sink_v.size() + s.k_mean.size() * 4;
}

void CpuCache::export_seq(int seq, uint8_t* out, size_t size) const {
  const CpuSeq& s = seqs_[seq];
  SeqCounts n;
  n.n_tokens = seq_length(seq);
  n.window_start = s.expired;
  n.first_block = s.table.first_live();
  n.n_blocks = s.n_blocks() - s.table.first_live();
  n.residual_len = s.res.len();
  n.sink_len = s.sink_len;
  write_seq_header(config(), n, out, size);
  uint8_t* p = out + fmt::kSeqHeaderBytes;
  for (int64_t b = s.table.first_live(); b < s.n_blocks(); ++b) p = write_block_record(p, s.blob(b), s.table.block(b).bytes);
  for (int kv = 0; kv < 2; ++kv) {
    s.res.copy_out(kv, 0, s.res.len(), p);
    p += s.res.used_bytes() / 2;
  }
  for (const std::vector<uint8_t>* d : {&s.sink_k, &s.sink_v}) {
    if (!d->empty()) std::memcpy(p, d->data(), d->size());
    p += d->size();
  }
  write_k_mean(p, s.k_mean.data(), s.k_mean.size());
  seal_seq_export(out, size);
}

void CpuCache::import_seq(int seq, const uint8_t* in, size_t size) {
  SeqImage img = read_seq_export(config(), in, size);
  drop_ahead(seq);  // the sequence is replaced (empty: api checks; settled for certain)
  const std::vector<size_t>& sizes = img.sizes;
  // pages (budget), table room; then commit (no throw)
  CpuSeq& s = seqs_[seq];
  const Placement pl = s.table.plan(sizes, pool_->page_bytes());
  CpuSeq fresh;  // the residual window, laid out before anything changes
  reserve_res(fresh, img.counts.residual_len);
  fresh.res.push(img.res_k.data(), img.res_v.data(), img.counts.residual_len);
  std::vector<Page*> pages;
  pool_->acquire(pl.new_pages, &pages);
  try {
    s.table.reserve(sizes.size());
  } catch (...) {
    for (Page* pg : pages) pool_->release(pg);
    throw;
  }
  s.table.set_first_live(img.counts.first_block);
  s.table.commit(pl, img.blobs.data(), sizes, pages.data(), pool_.get());
  s.res = std::move(fresh.res);
  s.sink_k.swap(img.sink_k);
  s.sink_v.swap(img.sink_v);
  s.sink_len = img.counts.sink_len;
  s.k_mean.swap(img.k_mean);
  s.expired = img.counts.window_start;
  expire(s);
  int64_t bytes = 0;
  for (size_t z : sizes) bytes += (int64_t)z;
  pool_->note_compressed(this, bytes, img.counts.n_blocks * config().shape.block_tokens);
}

}  // namespace packkv

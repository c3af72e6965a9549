// The sequence operations of issue 16 (packkv_x_cache_truncate, _fork, _set_window,
// _export_size, _export, _import) on caches with the levers of issue 15 (sink tokens,
// K centring): refused with PACKKV_ERR_NOT_SUPPORTED, and the refused call changes nothing.
// A cache in a shared pool keeps both levers working (decompressed values as a private
// cache's).
#include <doctest/doctest.h>

#include <string>

#include "pool_helpers.h"

namespace {

const int H = 2, D = 32;
const size_t kRow = (size_t)H * D;

packkv_cache_params_t lever_params(bool sinks) {
  packkv_cache_params_t p = pkt::params(H, D, 2);
  if (sinks)
    p.sink_tokens = 4;
  else
    p.k_transform = PACKKV_K_TRANSFORM_CENTER;
  p.block_tokens = 16;
  p.residual_tokens = 16;
  return p;
}

void check_refused(packkv_status_t st, const char* fn, bool sinks) {
  CHECK(st == PACKKV_ERR_NOT_SUPPORTED);
  const std::string msg = packkv_last_error_message();
  CAPTURE(msg);
  CHECK(msg.find(fn) != std::string::npos);
  CHECK(msg.find(sinks ? "not supported yet with sink tokens" : "not supported yet with K centring") !=
        std::string::npos);
}

}  // namespace

TEST_CASE("sequence operations refuse caches with sink tokens or K centring, changing nothing") {
  for (bool sinks : {true, false}) {
    CAPTURE(sinks);
    auto k = pkt::kv_data(60, H, D, 3), v = pkt::kv_data(60, H, D, 4);
    pkt::Cache c(lever_params(sinks));
    pkt::append1(c, 0, k, v, 0, 60, kRow);  // sinks (if any), blocks, residual window
    REQUIRE(pkt::stats(c, 0).n_blocks > 0);
    const pkt::State before = pkt::state(c, 2, kRow);

    check_refused(packkv_x_cache_truncate(c, 0, 30), "packkv_x_cache_truncate", sinks);
    CHECK(pkt::state(c, 2, kRow) == before);
    check_refused(packkv_x_cache_truncate(c, 0, 60), "packkv_x_cache_truncate", sinks);
    CHECK(pkt::state(c, 2, kRow) == before);
    check_refused(packkv_x_cache_fork(c, 0, 1), "packkv_x_cache_fork", sinks);
    CHECK(pkt::state(c, 2, kRow) == before);

    size_t bytes = 12345;
    check_refused(packkv_x_cache_export_size(c, 0, &bytes), "packkv_x_cache_export_size", sinks);
    CHECK(bytes == 12345);
    std::vector<uint8_t> buf(1 << 20, 0xAB);
    size_t written = 777;
    check_refused(packkv_x_cache_export(c, 0, buf.data(), buf.size(), &written), "packkv_x_cache_export", sinks);
    CHECK(written == 777);
    CHECK(buf[0] == 0xAB);
    check_refused(packkv_x_cache_import(c, 1, buf.data(), buf.size()), "packkv_x_cache_import", sinks);
    CHECK(pkt::state(c, 2, kRow) == before);

    // set_window: refused on a cache holding tokens and on an empty one alike
    check_refused(packkv_x_cache_set_window(c, 32), "packkv_x_cache_set_window", sinks);
    CHECK(pkt::state(c, 2, kRow) == before);
    pkt::Cache empty(lever_params(sinks));
    check_refused(packkv_x_cache_set_window(empty, 32), "packkv_x_cache_set_window", sinks);
    pkt::append1(empty, 0, k, v, 0, 60, kRow);  // no window took effect: every token is live
    int64_t first = -1;
    CHECK(packkv_x_cache_window_start(empty, 0, &first) == PACKKV_OK);
    CHECK(first == 0);
  }
}

TEST_CASE("a cache with sink tokens or K centring in a shared pool holds what a private cache holds") {
  for (bool sinks : {true, false}) {
    CAPTURE(sinks);
    auto k = pkt::kv_data(90, H, D, 5), v = pkt::kv_data(90, H, D, 6);
    const packkv_cache_params_t p = lever_params(sinks);
    int64_t page_bytes = 0;
    REQUIRE(packkv_x_pool_page_bytes_for(&p, &page_bytes) == PACKKV_OK);
    pkt::Pool pool(pkt::pool_params(page_bytes));
    pkt::PoolCache a(p, pool);
    pkt::Cache b(p);
    for (size_t t = 0; t < 90; t += 30) {
      pkt::append1(a, 0, k, v, t, 30, kRow);
      pkt::append1(b, 0, k, v, t, 30, kRow);
    }
    const pkt::State sa = pkt::state(a, 1, kRow), sb = pkt::state(b, 1, kRow);
    CHECK(sa.blocks == sb.blocks);
    CHECK(sa.data[0].k == sb.data[0].k);
    CHECK(sa.data[0].v == sb.data[0].v);
    CHECK(pkt::stats(a, 0).n_residual_tokens == pkt::stats(b, 0).n_residual_tokens);
  }
}

// The placement rule of device pages (pool/placement.h): the closed-form worst case equals
// placing worst-case blobs one by one, and the device's state (real blob sizes) never
// passes the host's bound (the worst case from the last exact state it read back), which
// is what lets the host provision pages without waiting for the device.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "pool/placement.h"

using packkv::PlaceState;

TEST_CASE("placement: worst_after equals worst-case blobs placed one by one") {
  for (size_t cap : {size_t{1000}, size_t{4096 - 64}, size_t{65536 - 64}}) {
    for (size_t worst : {size_t{16}, size_t{96}, size_t{496}, cap / 16 * 16}) {
      if (worst > cap) continue;
      for (PlaceState from : {PlaceState{-1, 0}, PlaceState{0, 0}, PlaceState{0, 7}, PlaceState{2, 100},
                              PlaceState{3, (unsigned)cap}, PlaceState{1, (unsigned)(cap - worst + 1)}}) {
        PlaceState s = from;
        for (int64_t n = 0; n <= 300; ++n) {
          CAPTURE(cap);
          CAPTURE(worst);
          CAPTURE(n);
          const PlaceState w = packkv::worst_after(from, n, worst, cap);
          REQUIRE(w.page == s.page);
          REQUIRE(w.fill == s.fill);
          packkv::place_next(&s, worst, cap);
        }
      }
    }
  }
}

TEST_CASE("placement: the device's state with real sizes stays at or before the host's worst-case bound") {
  std::mt19937 rng(16);
  for (int trial = 0; trial < 200; ++trial) {
    const size_t worst = 16 * (1 + rng() % 64), cap = worst * (1 + rng() % 8) + rng() % 64;
    std::uniform_int_distribution<size_t> size(1, worst);
    PlaceState dev{-1, 0}, bound{-1, 0}, snap{-1, 0};
    int64_t since_snap = 0;
    for (int step = 0; step < 400; ++step) {
      const int n = (int)(rng() % 3 == 0 ? rng() % 40 : 1);  // a prefill or a decode flush
      bound = packkv::worst_after(bound, n, worst, cap);
      for (int i = 0; i < n; ++i) {
        const size_t at = packkv::place_next(&dev, size(rng), cap);
        REQUIRE(at % 16 == 0);
        REQUIRE(dev.fill <= cap);
      }
      since_snap += n;
      REQUIRE(packkv::place_le(dev, bound));
      if (rng() % 5 == 0) {  // a read-back arrives: the exact state at that time + worst since
        const PlaceState refined = packkv::worst_after(snap, since_snap, worst, cap);
        REQUIRE(packkv::place_le(dev, refined));
        if (packkv::place_le(refined, bound)) bound = refined;
        snap = dev;
        since_snap = 0;
      }
    }
  }
}

// Host check of the a2 decode of bench/layout_study/decode_step.cu (the layout study's
// recommended decode): packs written with the library's own fmt::write_pack at random
// byte offsets, L 0..8 and random minimums, decoded by a2_pack on the host (the same
// function the kernel uses, host fallbacks for the intrinsics), compared value by value
// with min + code of the token the documented order names. Build and run (no GPU):
//   nvcc -O2 -I src -o build/check_decode bench/layout_study/check_decode.cu && build/check_decode
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "decode_step.cu"
#include "tile_format.h"

int main() {
  std::mt19937 rng(14);
  long long checked = 0, bad = 0;
  for (int trial = 0; trial < 20000; ++trial) {
    const int L = static_cast<int>(rng() % 9), off = static_cast<int>(rng() % 40);
    const uint32_t mn = rng() % 256;
    uint8_t codes[16];
    for (int i = 0; i < 16; ++i) codes[i] = static_cast<uint8_t>(L ? rng() % (1u << L) : 0);
    uint32_t T[16];
    std::memset(T, 0, sizeof T);
    packkv::fmt::write_pack(reinterpret_cast<uint8_t*>(T) + off, codes, L);
    uint4 row[2];
    a2_pack(T, 8u * off, static_cast<uint32_t>(L), mn, row);
    const uint32_t w[8] = {row[0].x, row[0].y, row[0].z, row[0].w, row[1].x, row[1].y, row[1].z, row[1].w};
    for (int q = 0; q < 2; ++q)
      for (int k = 0; k < 4; ++k)
        for (int h = 0; h < 2; ++h) {
          const int token = (h ? 11 : 15) - 8 * q - k;
          __half_raw r;
          r.x = static_cast<unsigned short>(w[4 * q + k] >> (16 * h));
          const float got = __half2float(__half(r)), want = static_cast<float>(mn + codes[token]);
          ++checked;
          if (got != want && bad++ < 5)
            std::printf("L %d off %d token %d: got %g, want %g\n", L, off, token, got, want);
        }
  }
  std::printf("a2 decode: %lld values checked, %lld wrong\n", checked, bad);
  return bad ? 1 : 0;
}

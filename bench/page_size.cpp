// The page size of the block pool (issue 16): page-end waste against page count.
// 1. Blob sizes are measured: real K/V of data/smollm2_kv_sample.safetensors (layers 0, 15,
//    29; 3 KV heads x 64) encoded by the CPU cache at the default rates, and the same
//    values arranged as the default shape (8 KV heads x 128: each token's 16 head vectors
//    taken in turn from the 9 real (layer, head) pairs).
// 2. Placement is the pool's rule (cpu/page_table.h): 16-aligned, a new page when a blob
//    does not fit. For each page size, 256 sequences with lengths uniform in [1K, 32K]
//    tokens draw their blob sizes from the measured ones (bootstrap, fixed seed).
// Reported per page size: held / used with and without the last (open) page of each
// sequence, the page-end waste of full pages, pages per sequence (allocations), and the
// bound of the issue: held <= 1.05 x used + one page per sequence.
// Usage: packkv_bench_page_size [data/smollm2_kv_sample.safetensors]
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "api/cache_impl.h"
#include "api/internal_access.h"
#include "common/rules.h"
#include "bench_util.h"
#include "packkv/packkv.h"
#include "safetensors.h"

using packkv_bench::check;
using packkv_bench::all_compressed_params;

namespace {

// Blob sizes of tokens [T][H][D] (fp16) compressed by a cache with residual 0, and the
// worst-case blob of that shape.
std::vector<size_t> blob_sizes(const std::vector<uint16_t>& k, const std::vector<uint16_t>& v, int64_t tokens, int heads,
                               int dim, size_t* worst) {
  packkv_cache_params_t p = all_compressed_params(heads, dim);
  packkv_cache_t* c = nullptr;
  check(packkv_cache_create(&p, &c), "create");
  int32_t id = 0, n = (int32_t)tokens;
  check(packkv_cache_append(c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F16, nullptr), "append");
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  std::vector<size_t> out;
  for (int64_t b = 0; b < impl.n_blocks(0); ++b) out.push_back(impl.block_bytes(0, b).size());
  *worst = packkv::align16(impl.config().shape.max_blob_bytes());
  packkv_cache_destroy(c);
  return out;
}

std::vector<uint16_t> as_u16(const packkv_eval::Tensor& t) {
  std::vector<uint16_t> x(t.bytes.size() / 2);
  std::memcpy(x.data(), t.bytes.data(), t.bytes.size());
  return x;
}

void simulate(const char* name, const std::vector<size_t>& sizes, size_t worst) {
  std::printf("\n%s: %zu blobs measured, mean %.0f B, min %zu, max %zu, worst case %zu B\n", name, sizes.size(),
              [&] { double s = 0; for (size_t z : sizes) s += (double)z; return s / sizes.size(); }(),
              *std::min_element(sizes.begin(), sizes.end()), *std::max_element(sizes.begin(), sizes.end()), worst);
  std::printf("%10s %8s %10s %12s %12s %10s %9s\n", "page", "worst/pg", "held/used", "w/o open pg", "end waste",
              "pages/seq", "bound ok");
  for (size_t page : {64u << 10, 128u << 10, 256u << 10, 512u << 10, 1u << 20, 2u << 20, 4u << 20, 8u << 20}) {
    if (page < worst) continue;
    std::mt19937 rng(42);
    std::uniform_int_distribution<int> len(1024, 32768);
    std::uniform_int_distribution<size_t> pick(0, sizes.size() - 1);
    double used = 0, held = 0, held_full = 0, waste = 0;
    long pages = 0;
    const int seqs = 256;
    for (int s = 0; s < seqs; ++s) {
      const int blocks = len(rng) / 64;
      size_t fill = 0;
      long mine = 0;
      for (int b = 0; b < blocks; ++b) {
        const size_t z = sizes[pick(rng)];
        size_t at = packkv::align16(fill);
        if (mine == 0 || at + z > page) {
          if (mine > 0) waste += (double)(page - fill);
          ++mine;
          at = 0;
        }
        fill = at + z;
        used += (double)z;
      }
      pages += mine;
      held += (double)mine * page;
      held_full += (double)(mine - 1) * page + (double)fill;
    }
    const bool ok = held <= 1.05 * used + (double)seqs * page;
    std::printf("%9zuK %8.1f %10.4f %12.4f %11.2f%% %10.1f %9s\n", page >> 10, (double)page / worst, held / used,
                held_full / used, 100.0 * waste / used, (double)pages / seqs, ok ? "yes" : "NO");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf("usage: %s [KV_DUMP.safetensors]  (default data/smollm2_kv_sample.safetensors)\n"
                "Page-end waste and pages per sequence of the pool's placement rule for several page\n"
                "sizes, on blocks encoded from real K/V (the measurement behind the default page size).\n",
                argv[0]);
    return 0;
  }
  const std::string path = argc > 1 ? argv[1] : "data/smollm2_kv_sample.safetensors";
  const packkv_eval::SafeTensors st = packkv_eval::read_safetensors(path);
  const int layers[3] = {0, 15, 29};
  std::vector<size_t> real, tiled;
  size_t worst_real = 0, worst_tiled = 0;
  std::vector<std::vector<uint16_t>> K, V;
  for (int l : layers) {
    K.push_back(as_u16(st.tensors.at("layer." + std::to_string(l) + ".k")));
    V.push_back(as_u16(st.tensors.at("layer." + std::to_string(l) + ".v")));
    const std::vector<size_t> z = blob_sizes(K.back(), V.back(), 2048, 3, 64, &worst_real);
    real.insert(real.end(), z.begin(), z.end());
  }
  // default shape: 8 heads x 128 = 16 vectors of 64 per token, from the 9 (layer, head) pairs
  const int64_t T = 2048;
  std::vector<uint16_t> k8((size_t)T * 1024), v8((size_t)T * 1024);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < 16; ++j) {
      const int pair = j % 9, l = pair / 3, h = pair % 3;
      std::memcpy(&k8[(size_t)t * 1024 + j * 64], &K[l][((size_t)t * 3 + h) * 64], 128);
      std::memcpy(&v8[(size_t)t * 1024 + j * 64], &V[l][((size_t)t * 3 + h) * 64], 128);
    }
  tiled = blob_sizes(k8, v8, T, 8, 128, &worst_tiled);
  simulate("SmolLM2 K/V, 3 KV heads x 64, block 64", real, worst_real);
  simulate("SmolLM2 K/V as 8 KV heads x 128 (default shape), block 64", tiled, worst_tiled);
  return 0;
}

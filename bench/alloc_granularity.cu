// How much device memory the CUDA allocators really take (issue 16: the cudaMemGetInfo
// drop of a cache against its bytes). For each allocator and request size, allocates the
// request n = 1..8 times and prints the fall of cudaMemGetInfo's free memory after each
// (MiB), then frees them and prints what is still not returned. Allocators:
//   malloc      cudaMalloc
//   async       cudaMallocAsync from the device's default memory pool (release
//               threshold 0), stream synchronized before each reading
//   async-trim  as async, plus cudaMemPoolTrimTo(pool, 0) before each reading
// A warm-up kernel launch comes first (the context's own allocations are not counted).
// Usage: packkv_alloc_granularity [--device G]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

void ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

__global__ void touch(char* p) {
  if (p) p[threadIdx.x] = 0;
}

double free_mib() {
  size_t f = 0, t = 0;
  ok(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
  return (double)f / (1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  int dev = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf("usage: %s [--device G]\nPrints the device memory each CUDA allocator takes for requests of\n"
                  "64 KiB .. 4 MiB, allocated 1..8 times (header of bench/alloc_granularity.cu).\n", argv[0]);
      return 0;
    }
    if (!std::strcmp(argv[i], "--device") && i + 1 < argc) dev = std::atoi(argv[++i]);
  }
  ok(cudaSetDevice(dev), "cudaSetDevice");
  touch<<<1, 32>>>(nullptr);
  ok(cudaDeviceSynchronize(), "warm-up");
  cudaStream_t st;
  ok(cudaStreamCreate(&st), "cudaStreamCreate");
  cudaMemPool_t pool;
  ok(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
  const size_t sizes[] = {64 << 10, 384 << 10, 768 << 10, 1376256 /* 1.3125 MiB */, 2 << 20, 4 << 20};
  const char* names[] = {"malloc", "async", "async-trim"};
  for (int a = 0; a < 3; ++a)
    for (size_t sz : sizes) {
      ok(cudaMemPoolTrimTo(pool, 0), "trim");
      const double f0 = free_mib();
      std::vector<void*> ptrs;
      std::printf("%-10s %8.4f MiB x 1..8, drop MiB:", names[a], (double)sz / (1 << 20));
      for (int n = 1; n <= 8; ++n) {
        void* p = nullptr;
        if (a == 0) ok(cudaMalloc(&p, sz), "cudaMalloc");
        else ok(cudaMallocAsync(&p, sz, st), "cudaMallocAsync");
        ptrs.push_back(p);
        ok(cudaStreamSynchronize(st), "sync");
        if (a == 2) ok(cudaMemPoolTrimTo(pool, 0), "trim");
        std::printf(" %.2f", f0 - free_mib());
      }
      for (void* p : ptrs) {
        if (a == 0) ok(cudaFree(p), "cudaFree");
        else ok(cudaFreeAsync(p, st), "cudaFreeAsync");
      }
      ok(cudaStreamSynchronize(st), "sync");
      std::printf(" | after free %.2f\n", f0 - free_mib());
    }
  return 0;
}

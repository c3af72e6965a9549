#include "cpu/isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace packkv {

namespace {

CpuIsa detect() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return CpuIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kPortable;
}

CpuIsa from_env(CpuIsa best) {
  const char* e = std::getenv("PACKKV_CPU_ISA");
  CpuIsa want = best;
  if (e && *e) {
    if (!std::strcmp(e, "portable"))
      want = CpuIsa::kPortable;
    else if (!std::strcmp(e, "avx2"))
      want = CpuIsa::kAvx2;
    else if (!std::strcmp(e, "avx512"))
      want = CpuIsa::kAvx512;
    else
      std::fprintf(stderr, "libpackkv: PACKKV_CPU_ISA=%s is not portable, avx2 or avx512; ignored\n", e);
  }
  return (int)want < (int)best ? want : best;
}

std::atomic<int>& current() {
  static std::atomic<int> isa{(int)from_env(cpu_isa_supported())};
  return isa;
}

}  // namespace

CpuIsa cpu_isa_supported() {
  static const CpuIsa best = detect();
  return best;
}

CpuIsa cpu_isa() { return (CpuIsa)current().load(std::memory_order_relaxed); }

CpuIsa set_cpu_isa_for_tests(CpuIsa isa) {
  const CpuIsa best = cpu_isa_supported();
  return (CpuIsa)current().exchange((int)((int)isa < (int)best ? isa : best));
}

const char* cpu_isa_name(CpuIsa isa) {
  return isa == CpuIsa::kAvx512 ? "avx512" : isa == CpuIsa::kAvx2 ? "avx2" : "portable";
}

}  // namespace packkv

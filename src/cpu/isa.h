// The instruction set the CPU kernels use (cpu/block_attention.cpp), chosen once at run time
// (issue 19): the widest of AVX-512 (F, BW, VL, DQ), AVX2 + FMA and the portable path
// (baseline x86-64 / any CPU) that this CPU and OS support, capped by the environment
// variable PACKKV_CPU_ISA = portable | avx2 | avx512 when set (read once, at the first
// attention call; an unknown value is ignored). Every path gives the same results up to
// fp32 rounding (FMA and the order of the 16-token sums; tests compare them).
#ifndef PACKKV_CPU_ISA_H
#define PACKKV_CPU_ISA_H

namespace packkv {

enum class CpuIsa { kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The path in use. Thread-safe.
CpuIsa cpu_isa();
// The widest path this CPU supports (what cpu_isa() is without a cap). Thread-safe.
CpuIsa cpu_isa_supported();
// Tests: uses `isa` (capped at cpu_isa_supported()) from now on; returns the previous path.
// Not to be called while attention runs on other threads.
CpuIsa set_cpu_isa_for_tests(CpuIsa isa);
const char* cpu_isa_name(CpuIsa isa);

}  // namespace packkv

#endif  // PACKKV_CPU_ISA_H

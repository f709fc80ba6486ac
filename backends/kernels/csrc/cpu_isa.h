// The SIMD level of the CPU at hand, shared by the srigl C++ extensions (fused Linear, direct
// conv): 0 generic, 1 AVX2 + FMA, 2 AVX-512F. SRIGL_ISA=generic|avx2|avx512 caps it (tests of
// the lower paths, odd CPUs).
#pragma once

#include <cstdlib>
#include <string>

namespace srigl_isa {

inline int detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  int isa = 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = 1;
  if (isa == 1 && __builtin_cpu_supports("avx512f")) isa = 2;
#else
  int isa = 0;
#endif
  if (const char* cap = std::getenv("SRIGL_ISA")) {
    const std::string c(cap);
    const int lim = c == "generic" ? 0 : c == "avx2" ? 1 : 2;
    if (lim < isa) isa = lim;
  }
  return isa;
}

// detect_isa() once per process
inline int detected_isa() {
  static const int isa = detect_isa();
  return isa;
}

}  // namespace srigl_isa

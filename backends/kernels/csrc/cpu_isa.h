// The SIMD level of the CPU at hand, shared by the srigl C++ extensions (fused Linear, direct
// conv): 0 generic, 1 AVX2 + FMA, 2 AVX-512F. SRIGL_ISA=generic|avx2|avx512 caps it (tests of
// the lower paths, odd CPUs).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
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

// The ISA level one extension runs at: detected_isa(), unless a failed self-check lowered the
// cap for this process (0 generic, 1 avx2, 2 avx512).
class IsaCap {
 public:
  int level() const { return std::min(detected_isa(), cap_.load(std::memory_order_relaxed)); }
  // Never run levels above `cap` (clamped to 0 .. 2) from now on; the level now.
  int lower_to(int64_t cap) {
    cap_.store(static_cast<int>(cap < 0 ? 0 : cap > 2 ? 2 : cap));
    return level();
  }

 private:
  std::atomic<int> cap_{2};
};

// One object per ISA level, e.g. an extension's kernel tables: at(isa) for 0 generic, 1 avx2,
// 2 (or more) avx512.
template <typename T>
struct PerIsa {
  const T& generic;
  const T& avx2;
  const T& avx512;
  const T& at(int isa) const { return isa >= 2 ? avx512 : isa == 1 ? avx2 : generic; }
};

}  // namespace srigl_isa

// Interface between the dense-linear driver (dense_op.cpp) and its per-ISA micro-kernels
// (dense_generic.cpp, dense_avx2.cpp, dense_avx512.cpp, all from dense_impl.h). Plain C++, no
// torch or standard-library templates in the ISA translation units (see fused_kernels.h).
//
// Packed weight ("panels"): float [npanels, in + 1, P] with P = kDensePanel output rows per
// panel; panel p holds W[p*P + r, i] at [p, i, r] (zero rows pad the last panel) and its
// bias at [p, in, r]. One layout for every ISA, so every variant runs on every pack.
#pragma once
#include <stdint.h>

namespace srigl_dense {

constexpr int kDensePanel = 32;
constexpr int kDenseChunk = 256;  // inputs per chunk of the blocked tile family

// out[b, o] for b in [0, B), rows o of panels [p0, p1); x row stride ldx (unit column stride),
// out row stride ldo. family: 0 gemv (few batch rows per pass, several accumulators per row
// vector), 1 tile (register tile of rows x batch rows), 2 tile over input chunks.
struct DenseTable {
  const char* name;
  void (*panels)(int family, const float* x, int64_t ldx, int64_t B, int64_t in,
                 const float* pack, int64_t p0, int64_t p1, int64_t out_f, float* out,
                 int64_t ldo);
  // the FMA probe: `iters` steps of independent FMA chains; returns their sum (kept live)
  float (*fma_loop)(int64_t iters, float seed);
  int64_t (*fma_flops_per_iter)();
  // sum of n floats, `reps` times (a read-bandwidth probe); returns the sum
  float (*read_sum)(const float* p, int64_t n, int64_t reps);
};

extern const DenseTable kDenseGeneric;
extern const DenseTable kDenseAvx2;
extern const DenseTable kDenseAvx512;

}  // namespace srigl_dense

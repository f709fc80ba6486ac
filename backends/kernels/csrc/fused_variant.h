// The variant code of the fused-linear micro-kernels, the one C++ place that encodes it (the
// Python side: backends/kernels/ops.py, encode / decode).
//   code = isa * 1000 + family * 100 + wide * 10 + parallel
//   isa 0 generic, 1 avx2, 2 avx512; family 0 rows (gathers), 1 perm (permute pack), 2 tiled,
//   3 tiled in input chunks (blocked), 4 nm (N:M layers only: per group of M inputs, N 4-bit
//   in-group offsets; runs where the pack found an N:M pattern); wide: the tiled kernels' width,
//   0: 4 vector accumulators per neuron, 1: 8 (wide), 2: 2 (narrow; 3, one vector, only for a
//   run's tail tiles, never a variant's); parallel: the work pool (work_pool.h).
// The autotuner's table: int32 [kThreadSlots, kBuckets] of codes; an entry -1 = the static rule.
#pragma once
#include <cstdint>

namespace srigl {

constexpr int kThreadSlots = 64;
constexpr int kBuckets = 11;

struct Variant {
  int isa, family, wide, par;
};

inline Variant decode(int64_t code) {
  return {static_cast<int>(code / 1000), static_cast<int>(code / 100 % 10),
          static_cast<int>(code / 10 % 10), static_cast<int>(code % 10)};
}

inline int64_t encode(const Variant& v) {
  return v.isa * 1000 + v.family * 100 + v.wide * 10 + v.par;
}

}  // namespace srigl

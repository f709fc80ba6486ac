// The dense-linear micro-kernels, written once and compiled per ISA (included by
// dense_generic.cpp, dense_avx2.cpp and dense_avx512.cpp with SRIGL_DENSE_* set). Every
// function has internal linkage, except the exported table.
//
// Layout (dense_kernels.h): panels of P = 32 output rows, [in + 1][P] each (bias last). A
// micro-kernel computes NVS row vectors of one panel for C batch rows: per input i it loads
// the NVS weight vectors W[p, i, :] once and adds weight * broadcast(x[b, i]) into C x NVS
// register accumulators, so no horizontal sums and no transposed copy of x are needed; the
// output rows o0 .. o0 + P of batch row b are contiguous, so results store as whole vectors.
//   gemv (family 0): the whole panel (P / VL vectors) for up to CG batch rows per pass, with
//     U independent accumulator sets over consecutive inputs (enough FMA chains at batch 1).
//   tile (family 1): a register tile of NVS vectors x CT batch rows (AVX2 2 x 6, AVX-512
//     2 x 12); the panel stays in L2 while all batch rows pass over it.
//   tile over input chunks (family 2): the same, kDenseChunk inputs at a time (the panel's
//     chunk stays in L1), adding into the output after the first chunk.
#include <stdint.h>
#include <string.h>

#include "dense_kernels.h"

#if defined(SRIGL_DENSE_AVX2) || defined(SRIGL_DENSE_AVX512)
#include <immintrin.h>
#endif

namespace srigl_dense {
namespace SRIGL_DENSE_NS {
namespace {

// ---------------------------------------------------------------- vector abstraction
#include "simd.h"

// register blocking per ISA (see the layout above)
#if defined(SRIGL_DENSE_AVX512)
constexpr int NVS_G = 2, CG = 4, NVS_T = 2, CT = 12, FMA_CHAINS = 12;
constexpr int gemv_unroll(int c) { return c == 1 ? 4 : c <= 3 ? 2 : 1; }
#elif defined(SRIGL_DENSE_AVX2)
constexpr int NVS_G = 4, CG = 2, NVS_T = 2, CT = 6, FMA_CHAINS = 10;
constexpr int gemv_unroll(int c) { return c == 1 ? 2 : 1; }
#else
constexpr int NVS_G = 4, CG = 2, NVS_T = 2, CT = 4, FMA_CHAINS = 8;
constexpr int gemv_unroll(int) { return 1; }
#endif

constexpr int P = kDensePanel;
constexpr int NV = P / VL;
static_assert(P % VL == 0 && NV % NVS_G == 0 && NV % NVS_T == 0, "panel geometry");

inline float hsum(vf a) {
  float t[VL];
  vstore(t, a);
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += t[i];
  return s;
}

// NVS row vectors x C batch rows over kc inputs. w: the panel's first row vector at input k0
// (row stride P); x: x[b0, k0] (row stride ldx); dst: out[b0, row] (row stride ldd); bias: the
// panel's bias at the same rows, or nullptr to add into dst (a later input chunk).
template <int NVS, int C, int U>
inline void micro(const float* w, int64_t kc, const float* x, int64_t ldx, float* dst,
                  int64_t ldd, const float* bias) {
  vf acc[U][C][NVS];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NVS; ++v) {
      acc[0][c][v] = bias ? vload(bias + v * VL) : vload(dst + c * ldd + v * VL);
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) acc[u][c][v] = vzero();
    }
  int64_t i = 0;
  for (; i + U <= kc; i += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const float* wr = w + (i + u) * P;
      vf wv[NVS];
#pragma GCC unroll 4
      for (int v = 0; v < NVS; ++v) wv[v] = vload(wr + v * VL);
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        const vf xb = vbcast(x[c * ldx + i + u]);
#pragma GCC unroll 4
        for (int v = 0; v < NVS; ++v) acc[u][c][v] = vfma(wv[v], xb, acc[u][c][v]);
      }
    }
  }
  for (; i < kc; ++i) {
    const float* wr = w + i * P;
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const vf xb = vbcast(x[c * ldx + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NVS; ++v) acc[0][c][v] = vfma(vload(wr + v * VL), xb, acc[0][c][v]);
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c)
#pragma GCC unroll 4
    for (int v = 0; v < NVS; ++v) {
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) acc[0][c][v] = vadd(acc[0][c][v], acc[u][c][v]);
      vstore(dst + c * ldd + v * VL, acc[0][c][v]);
    }
}

#define SRIGL_DENSE_CASE(NVS, CC, U)                \
  case CC:                                          \
    micro<NVS, CC, U>(w, kc, x, ldx, dst, ldd, bias); \
    return;

// gemv pass: the whole panel for c <= CG batch rows
inline void gemv_block(int c, const float* w, int64_t kc, const float* x, int64_t ldx,
                       float* dst, int64_t ldd, const float* bias) {
  switch (c) {
    SRIGL_DENSE_CASE(NVS_G, 1, gemv_unroll(1))
    SRIGL_DENSE_CASE(NVS_G, 2, gemv_unroll(2))
#if defined(SRIGL_DENSE_AVX512)
    SRIGL_DENSE_CASE(NVS_G, 3, gemv_unroll(3))
    SRIGL_DENSE_CASE(NVS_G, 4, gemv_unroll(4))
#endif
    default:
      return;
  }
}

// tile pass: NVS_T row vectors for c <= CT batch rows
inline void tile_block(int c, const float* w, int64_t kc, const float* x, int64_t ldx,
                       float* dst, int64_t ldd, const float* bias) {
  switch (c) {
    SRIGL_DENSE_CASE(NVS_T, 1, 1)
    SRIGL_DENSE_CASE(NVS_T, 2, 1)
    SRIGL_DENSE_CASE(NVS_T, 3, 1)
    SRIGL_DENSE_CASE(NVS_T, 4, 1)
#if !defined(SRIGL_DENSE_GENERIC)
    SRIGL_DENSE_CASE(NVS_T, 5, 1)
    SRIGL_DENSE_CASE(NVS_T, 6, 1)
#endif
#if defined(SRIGL_DENSE_AVX512)
    SRIGL_DENSE_CASE(NVS_T, 7, 1)
    SRIGL_DENSE_CASE(NVS_T, 8, 1)
    SRIGL_DENSE_CASE(NVS_T, 9, 1)
    SRIGL_DENSE_CASE(NVS_T, 10, 1)
    SRIGL_DENSE_CASE(NVS_T, 11, 1)
    SRIGL_DENSE_CASE(NVS_T, 12, 1)
#endif
    default:
      return;
  }
}
#undef SRIGL_DENSE_CASE

// one panel (weights wp [in + 1][P], bias last) into dst [B][ldd] (P valid columns)
void one_panel(int family, const float* x, int64_t ldx, int64_t B, int64_t in, const float* wp,
               float* dst, int64_t ldd) {
  const float* bp = wp + in * P;
  if (family == 0) {
    for (int64_t b0 = 0; b0 < B; b0 += CG) {
      const int c = static_cast<int>(B - b0 < CG ? B - b0 : CG);
      gemv_block(c, wp, in, x + b0 * ldx, ldx, dst + b0 * ldd, ldd, bp);
    }
    return;
  }
  const int64_t step = family == 2 ? kDenseChunk : (in > 0 ? in : 1);
  for (int64_t k0 = 0; k0 == 0 || k0 < in; k0 += step) {
    const int64_t kc = in - k0 < step ? in - k0 : step;
    for (int h = 0; h < NV / NVS_T; ++h) {
      const int64_t r0 = h * NVS_T * VL;
      for (int64_t b0 = 0; b0 < B; b0 += CT) {
        const int c = static_cast<int>(B - b0 < CT ? B - b0 : CT);
        tile_block(c, wp + k0 * P + r0, kc, x + b0 * ldx + k0, ldx, dst + b0 * ldd + r0, ldd,
                   k0 == 0 ? bp + r0 : nullptr);
      }
    }
  }
}

// A per-thread scratch buffer that only grows (the partial last panel of every call reuses it;
// a pool chunk must not leak or allocate per call). Defined here, not std::vector: standard
// templates instantiated under this file's `#pragma GCC target` could be merged by the linker
// into the generic translation unit.
struct Scratch {
  float* p = nullptr;
  int64_t n = 0;
  ~Scratch() { delete[] p; }
  float* get(int64_t want) {
    if (want > n) {
      delete[] p;
      p = nullptr;
      n = 0;
      p = new float[want];  // may throw std::bad_alloc: the pool passes it to the caller
      n = want;
    }
    return p;
  }
};
thread_local Scratch t_scratch;

void panels(int family, const float* x, int64_t ldx, int64_t B, int64_t in, const float* pack,
            int64_t p0, int64_t p1, int64_t out_f, float* out, int64_t ldo) {
  const int64_t pstride = (in + 1) * P;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t o0 = p * P;
    const int64_t valid = out_f - o0 < P ? out_f - o0 : P;
    if (valid == P) {
      one_panel(family, x, ldx, B, in, pack + p * pstride, out + o0, ldo);
      continue;
    }
    // the last, partial panel: full-width results into a scratch buffer, then the valid rows
    float* tmp = t_scratch.get(B * P);
    one_panel(family, x, ldx, B, in, pack + p * pstride, tmp, P);
    for (int64_t b = 0; b < B; ++b)
      memcpy(out + b * ldo + o0, tmp + b * P, static_cast<size_t>(valid) * sizeof(float));
  }
}

float fma_loop(int64_t iters, float seed) {
  vf a[FMA_CHAINS];
  for (int j = 0; j < FMA_CHAINS; ++j) a[j] = vbcast(seed + 0.001f * static_cast<float>(j));
  const vf m = vbcast(0.9999999f), add = vbcast(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int j = 0; j < FMA_CHAINS; ++j) a[j] = vfma(a[j], m, add);
  }
  float s = 0.0f;
  for (int j = 0; j < FMA_CHAINS; ++j) s += hsum(a[j]);
  return s;
}

int64_t fma_flops_per_iter() { return int64_t(2) * FMA_CHAINS * VL; }

float read_sum(const float* p, int64_t n, int64_t reps) {
  float total = 0.0f;
  for (int64_t r = 0; r < reps; ++r) {
    vf s[8];
    for (int u = 0; u < 8; ++u) s[u] = vzero();
    int64_t i = 0;
    for (; i + 8 * VL <= n; i += 8 * VL) {
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) s[u] = vadd(s[u], vload(p + i + u * VL));
    }
    float t = 0.0f;
    for (; i < n; ++i) t += p[i];
    for (int u = 0; u < 8; ++u) t += hsum(s[u]);
    total += t;
  }
  return total;
}

}  // namespace
}  // namespace SRIGL_DENSE_NS

extern const DenseTable SRIGL_DENSE_TABLE = {
    SRIGL_DENSE_TABLE_NAME, &SRIGL_DENSE_NS::panels, &SRIGL_DENSE_NS::fma_loop,
    &SRIGL_DENSE_NS::fma_flops_per_iter, &SRIGL_DENSE_NS::read_sum};

}  // namespace srigl_dense

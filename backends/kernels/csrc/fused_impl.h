// The fused-linear micro-kernels, written once and compiled per ISA (included by
// fused_generic.cpp, fused_avx2.cpp and fused_avx512.cpp with SRIGL_ISA_* set). No standard
// library templates here (see fused_kernels.h); every function has internal linkage.
//
// rows:  one dot product per neuron over its k kept inputs, gathered from x (any batch).
// perm:  the permute pack: `lanes` neurons at once, one input block in registers, one
//        in-register permute per step instead of `lanes` gathers (batch 1-8).
// tiled: x transposed into [in][T] tiles; per neuron NACC vector accumulators over T columns
//        (T = NACC * vector width); each kept weight adds weight * one tile row (batch >= 16).
// nm:    N:M layers: as rows, but each kept input is its group's base (implied by its position)
//        plus a 4-bit offset; SIMD: one gather of VL kept inputs per step, group-local.
#include <stdint.h>
#include <string.h>
#include <type_traits>

#include "fused_kernels.h"

#if defined(SRIGL_ISA_AVX2) || defined(SRIGL_ISA_AVX512)
#include <immintrin.h>
#endif

namespace srigl {
namespace SRIGL_NS {
namespace {

// ---------------------------------------------------------------- vector abstraction
#include "simd.h"

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Rows [m0, m1) in blocks of 4, then 2, then 1 rows: f(RowBlock<MR>{}, first row) per block.
template <int MR>
struct RowBlock {
  static constexpr int mr = MR;
};
template <typename F>
void by_row_blocks(int64_t m0, int64_t m1, const F& f) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) f(RowBlock<4>{}, m);
  if (m + 2 <= m1) {
    f(RowBlock<2>{}, m);
    m += 2;
  }
  if (m < m1) f(RowBlock<1>{}, m);
}
inline int64_t col_of(const LayerView& L, int64_t j) { return L.all_active ? j : L.active[j]; }

// ---------------------------------------------------------------- rows (gather) kernel
template <int MR, typename IT>
void rows_mr(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t j0,
             int64_t j1, float* out, int64_t som, int64_t soj) {
  const IT* idx_all = static_cast<const IT*>(L.indices);
  const int64_t k = L.k;
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  for (int64_t j = j0; j < j1; ++j) {
    const float* v = L.values + j * k;
    const IT* ix = idx_all + j * k;
    // NS partial sums per row: independent add chains (the add latency, not the loads,
    // would bound one chain)
    constexpr int NS = MR == 1 ? 4 : 2;
    float sum[MR][NS];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NS; ++q) sum[r][q] = 0.0f;
    int64_t t = 0;
    for (; t + NS <= k; t += NS) {
      for (int q = 0; q < NS; ++q) {
        const int64_t a = ix[t + q];
        const float va = v[t + q];
        for (int r = 0; r < MR; ++r) sum[r][q] += va * xr[r][a];
      }
    }
    for (; t < k; ++t) {
      const int64_t a = ix[t];
      for (int r = 0; r < MR; ++r) sum[r][0] += v[t] * xr[r][a];
    }
    const int64_t c = col_of(L, j);
    const float b = L.bias[c];
    for (int r = 0; r < MR; ++r) {
      float total = 0.0f;
      for (int q = 0; q < NS; ++q) total += sum[r][q];
      out[(m0 + r) * som + c * soj] = total + b;
    }
  }
}

template <typename IT>
void rows_typed(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t m1,
                int64_t j0, int64_t j1, float* out, int64_t som, int64_t soj) {
  by_row_blocks(m0, m1, [&](auto rb, int64_t m) {
    rows_mr<decltype(rb)::mr, IT>(L, x, ldx, m, j0, j1, out, som, soj);
  });
}

void rows(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t m1, int64_t j0,
          int64_t j1, float* out, int64_t som, int64_t soj) {
  if (L.idx_bytes == 2)
    rows_typed<int16_t>(L, x, ldx, m0, m1, j0, j1, out, som, soj);
  else
    rows_typed<int32_t>(L, x, ldx, m0, m1, j0, j1, out, som, soj);
}

// ---------------------------------------------------------------- permute-pack kernels
// x arrives padded (pad_blocks in fused_dispatch.cpp): row r of xp holds, per input block, its
// block - 1 inputs and a zero, so every window loads whole registers at its offset with no tail
// case, and every window holds a zero slot for the idle lanes.

// Writes one group's accumulators (lanes floats per row) to the output.
inline void store_group(const LayerView& L, int64_t g, int64_t m, const float* acc, float* out,
                        int64_t som, int64_t soj) {
  const int64_t lanes = L.lanes;
  const int64_t j0 = g * lanes, je = imin(j0 + lanes, L.n);
  for (int64_t j = j0; j < je; ++j) {
    const int64_t c = col_of(L, j);
    out[m * som + c * soj] = acc[j - j0] + L.bias[c];
  }
}

// Portable emulation for any (lanes <= 16, block <= 32): the reference of the pack format,
// walking each group's windows as the SIMD kernels do.
template <int MR>
void perm_scalar_mr(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t g0,
                    int64_t g1, float* out, int64_t som, int64_t soj) {
  const int lanes = L.lanes;
  float acc[MR][16];
  for (int64_t g = g0; g < g1; ++g) {
    for (int r = 0; r < MR; ++r)
      for (int l = 0; l < lanes; ++l) acc[r][l] = 0.0f;
    const float* pv = L.pvals + L.grp_step[g] * lanes;
    const uint8_t* pi = L.pidx + L.grp_step[g] * lanes;
    for (int32_t b = L.grp_blk[g]; b < L.grp_blk[g + 1]; ++b) {
      const int64_t off = L.blocks[2 * b];
      for (int32_t s = 0; s < L.blocks[2 * b + 1]; ++s, pv += lanes, pi += lanes)
        for (int l = 0; l < lanes; ++l)
          for (int r = 0; r < MR; ++r) acc[r][l] += pv[l] * xp[(m0 + r) * ldp + off + pi[l]];
    }
    for (int r = 0; r < MR; ++r) store_group(L, g, m0 + r, acc[r], out, som, soj);
  }
}

#if defined(SRIGL_ISA_AVX512)
// 16 neurons per group; block 16 (one register, vpermps) or 32 (two, vpermt2ps). Walks the
// group's windows: x of a window is loaded once per row, then each step is one byte-index
// expansion, one permute and one FMA per row (no x reload, no per-step offset).
template <int MR, int W>
void perm_mr(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t g0,
             int64_t g1, float* out, int64_t som, int64_t soj) {
  alignas(64) float accs[16];
  constexpr int NA = MR == 1 ? 4 : MR == 2 ? 2 : 1;  // FMA chains per row (latency)
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = xp + (m0 + r) * ldp;
  for (int64_t g = g0; g < g1; ++g) {
    __m512 acc[MR][NA];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NA; ++q) acc[r][q] = _mm512_setzero_ps();
    const float* pv = L.pvals + L.grp_step[g] * 16;
    const uint8_t* pi = L.pidx + L.grp_step[g] * 16;
    for (int32_t b = L.grp_blk[g]; b < L.grp_blk[g + 1]; ++b) {
      const int64_t off = L.blocks[2 * b];
      const int32_t S = L.blocks[2 * b + 1];
      __m512 xa[MR], xb[MR];
      for (int r = 0; r < MR; ++r) {
        xa[r] = _mm512_loadu_ps(xr[r] + off);
        xb[r] = W == 32 ? _mm512_loadu_ps(xr[r] + off + 16) : xa[r];
      }
      auto step = [&](int q) {
        const __m512i ix = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)pi));
        const __m512 w = _mm512_loadu_ps(pv);
        for (int r = 0; r < MR; ++r) {
          const __m512 xv = W == 32 ? _mm512_permutex2var_ps(xa[r], ix, xb[r])
                                    : _mm512_permutexvar_ps(ix, xa[r]);
          acc[r][q] = _mm512_fmadd_ps(w, xv, acc[r][q]);
        }
        pv += 16;
        pi += 16;
      };
      int32_t s = S;
      for (; s >= NA; s -= NA)
        for (int q = 0; q < NA; ++q) step(q);
      // the last S % NA steps, nested so that a short window leaves after one test (most
      // windows hold 1-3 steps: their branches decide the time); constant accumulator indices
      if (NA > 1 && s > 0) {
        step(0);
        if (NA > 2 && s > 1) {
          step(NA > 2 ? 1 : 0);
          if (NA > 3 && s > 2) step(NA > 3 ? 2 : 0);
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 1; q < NA; ++q) acc[r][0] = _mm512_add_ps(acc[r][0], acc[r][q]);
    const bool full = L.all_active && soj == 1 && (g + 1) * 16 <= L.n;
    for (int r = 0; r < MR; ++r) {
      if (full) {
        float* dst = out + (m0 + r) * som + g * 16;
        _mm512_storeu_ps(dst, _mm512_add_ps(acc[r][0], _mm512_loadu_ps(L.bias + g * 16)));
      } else {
        _mm512_store_ps(accs, acc[r][0]);
        store_group(L, g, m0 + r, accs, out, som, soj);
      }
    }
  }
}
constexpr int kPermLanes = 16;
inline int perm_block_ok(int block) { return block == 16 || block == 32; }
#elif defined(SRIGL_ISA_AVX2)
// 8 neurons per group; block 8 (one register, vpermps) or 16 (two vpermps + blend on bit 3).
// Walks the group's windows as the AVX-512 kernel does (x loaded once per window and row).
template <int MR, int W>
void perm_mr(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t g0,
             int64_t g1, float* out, int64_t som, int64_t soj) {
  alignas(32) float accs[8];
  constexpr int NA = MR == 1 ? 4 : MR == 2 ? 2 : 1;  // FMA chains per row (latency)
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = xp + (m0 + r) * ldp;
  for (int64_t g = g0; g < g1; ++g) {
    __m256 acc[MR][NA];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NA; ++q) acc[r][q] = _mm256_setzero_ps();
    const float* pv = L.pvals + L.grp_step[g] * 8;
    const uint8_t* pi = L.pidx + L.grp_step[g] * 8;
    for (int32_t b = L.grp_blk[g]; b < L.grp_blk[g + 1]; ++b) {
      const int64_t off = L.blocks[2 * b];
      const int32_t S = L.blocks[2 * b + 1];
      __m256 xa[MR], xb[MR];
      for (int r = 0; r < MR; ++r) {
        xa[r] = _mm256_loadu_ps(xr[r] + off);
        xb[r] = W == 16 ? _mm256_loadu_ps(xr[r] + off + 8) : xa[r];
      }
      auto step = [&](int q) {
        const __m256i ix = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)pi));
        const __m256 w = _mm256_loadu_ps(pv);
        if (W == 16) {
          const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(ix, 28));
          for (int r = 0; r < MR; ++r) {
            const __m256 a = _mm256_permutevar8x32_ps(xa[r], ix);
            const __m256 c = _mm256_permutevar8x32_ps(xb[r], ix);
            acc[r][q] = _mm256_fmadd_ps(w, _mm256_blendv_ps(a, c, sel), acc[r][q]);
          }
        } else {
          for (int r = 0; r < MR; ++r)
            acc[r][q] = _mm256_fmadd_ps(w, _mm256_permutevar8x32_ps(xa[r], ix), acc[r][q]);
        }
        pv += 8;
        pi += 8;
      };
      int32_t s = S;
      for (; s >= NA; s -= NA)
        for (int q = 0; q < NA; ++q) step(q);
      // the last S % NA steps, nested so that a short window leaves after one test (most
      // windows hold 1-3 steps: their branches decide the time); constant accumulator indices
      if (NA > 1 && s > 0) {
        step(0);
        if (NA > 2 && s > 1) {
          step(NA > 2 ? 1 : 0);
          if (NA > 3 && s > 2) step(NA > 3 ? 2 : 0);
        }
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 1; q < NA; ++q) acc[r][0] = _mm256_add_ps(acc[r][0], acc[r][q]);
    const bool full = L.all_active && soj == 1 && (g + 1) * 8 <= L.n;
    for (int r = 0; r < MR; ++r) {
      if (full) {
        float* dst = out + (m0 + r) * som + g * 8;
        _mm256_storeu_ps(dst, _mm256_add_ps(acc[r][0], _mm256_loadu_ps(L.bias + g * 8)));
      } else {
        _mm256_store_ps(accs, acc[r][0]);
        store_group(L, g, m0 + r, accs, out, som, soj);
      }
    }
  }
}
constexpr int kPermLanes = 8;
inline int perm_block_ok(int block) { return block == 8 || block == 16; }
#endif

#if defined(SRIGL_ISA_AVX2) || defined(SRIGL_ISA_AVX512)
template <int MR>
void perm_rows(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t g0,
               int64_t g1, float* out, int64_t som, int64_t soj) {
  if (L.block == kPermLanes)
    perm_mr<MR, kPermLanes>(L, xp, ldp, m0, g0, g1, out, som, soj);
  else
    perm_mr<MR, 2 * kPermLanes>(L, xp, ldp, m0, g0, g1, out, som, soj);
}
int perm_supports(int lanes, int block) { return lanes == kPermLanes && perm_block_ok(block); }
#else
template <int MR>
void perm_rows(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t g0,
               int64_t g1, float* out, int64_t som, int64_t soj) {
  perm_scalar_mr<MR>(L, xp, ldp, m0, g0, g1, out, som, soj);
}
int perm_supports(int lanes, int block) {
  return lanes >= 1 && lanes <= 16 && block >= 2 && block <= 32;
}
#endif

void perm(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t m1, int64_t g0,
          int64_t g1, float* out, int64_t som, int64_t soj) {
  by_row_blocks(m0, m1, [&](auto rb, int64_t m) {
    perm_rows<decltype(rb)::mr>(L, xp, ldp, m, g0, g1, out, som, soj);
  });
}

// A pack the SIMD registers do not fit runs through the portable emulation.
void perm_any(const LayerView& L, const float* xp, int64_t ldp, int64_t m0, int64_t m1,
              int64_t g0, int64_t g1, float* out, int64_t som, int64_t soj) {
  if (!perm_supports(L.lanes, L.block)) {
    for (int64_t m = m0; m < m1; ++m) perm_scalar_mr<1>(L, xp, ldp, m, g0, g1, out, som, soj);
    return;
  }
  perm(L, xp, ldp, m0, m1, g0, g1, out, som, soj);
}

// ---------------------------------------------------------------- N:M kernel
// Kept weight t of neuron j reads input (t / N) * M + its offset: the group base follows from
// the position, the offset (< M <= 16) is a nibble of the neuron's row of nm_off (t even: low
// nibble of byte t / 2, t odd: high). Portable form (and the SIMD kernels' tail): two partial
// sums per row, one per group parity.
inline int64_t nm_row_bytes(int64_t k) { return (k + 1) / 2; }
inline int64_t nm_offset(const uint8_t* o, int64_t t) { return (o[t >> 1] >> ((t & 1) * 4)) & 15; }

template <int MR>
void nm_scalar_mr(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t j0,
                  int64_t j1, float* out, int64_t som, int64_t soj) {
  const int64_t k = L.k, N = L.nm_n, M = L.nm_m, G = k / N;
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  for (int64_t j = j0; j < j1; ++j) {
    const float* v = L.values + j * k;
    const uint8_t* o = L.nm_off + j * nm_row_bytes(k);
    float sum[MR][2];
    for (int r = 0; r < MR; ++r) sum[r][0] = sum[r][1] = 0.0f;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t base = g * M, t0 = g * N;
      for (int64_t t = t0; t < t0 + N; ++t)
        for (int r = 0; r < MR; ++r) sum[r][g & 1] += v[t] * xr[r][base + nm_offset(o, t)];
    }
    const int64_t c = col_of(L, j);
    for (int r = 0; r < MR; ++r) out[(m0 + r) * som + c * soj] = sum[r][0] + sum[r][1] + L.bias[c];
  }
}

#if defined(SRIGL_ISA_AVX2) || defined(SRIGL_ISA_AVX512)
// bytes b0 b1 .. (two nibbles each) -> bytes b0 & 15, b0 >> 4, b1 & 15, b1 >> 4, ..
inline __m128i nibbles_to_bytes(__m128i x) {
  const __m128i lo4 = _mm_set1_epi8(0x0f);
  return _mm_unpacklo_epi8(_mm_and_si128(x, lo4), _mm_and_si128(_mm_srli_epi16(x, 4), lo4));
}
#if defined(SRIGL_ISA_AVX512)
typedef __m512i vi;
inline vi nm_offsets(const uint8_t* o) {  // 16 offsets from 8 bytes
  return _mm512_cvtepu8_epi32(nibbles_to_bytes(_mm_loadl_epi64((const __m128i*)o)));
}
inline vi vi_add(vi a, vi b) { return _mm512_add_epi32(a, b); }
inline vi vi_set1(int32_t a) { return _mm512_set1_epi32(a); }
inline vi vi_lane_bases(int32_t n, int32_t m) {  // lane l: (l / n) * m
  alignas(64) int32_t b[16];
  for (int l = 0; l < 16; ++l) b[l] = l / n * m;
  return _mm512_load_si512(b);
}
inline vf vgather(const float* base, vi idx) { return _mm512_i32gather_ps(idx, base, 4); }
inline float vsum(vf a) { return _mm512_reduce_add_ps(a); }
#else
typedef __m256i vi;
inline vi nm_offsets(const uint8_t* o) {  // 8 offsets from 4 bytes
  int32_t four;
  memcpy(&four, o, 4);
  return _mm256_cvtepu8_epi32(nibbles_to_bytes(_mm_cvtsi32_si128(four)));
}
inline vi vi_add(vi a, vi b) { return _mm256_add_epi32(a, b); }
inline vi vi_set1(int32_t a) { return _mm256_set1_epi32(a); }
inline vi vi_lane_bases(int32_t n, int32_t m) {
  alignas(32) int32_t b[8];
  for (int l = 0; l < 8; ++l) b[l] = l / n * m;
  return _mm256_load_si256((const __m256i*)b);
}
inline vf vgather(const float* base, vi idx) { return _mm256_i32gather_ps(base, idx, 4); }
inline float vsum(vf a) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
}
#endif

// VL kept weights per step (N divides VL, so they cover VL / N whole groups): their VL / 2
// offset bytes widen to VL int32 offsets, and the inputs are one gather at lane base + step
// base + offsets; two FMA chains per row at MR 1.
template <int MR>
void nm_simd_mr(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t j0,
                int64_t j1, float* out, int64_t som, int64_t soj) {
  const int64_t k = L.k, N = L.nm_n, M = L.nm_m;
  const int32_t stride = static_cast<int32_t>(VL / N * M);  // inputs a step advances
  const vi lanes = vi_lane_bases(static_cast<int32_t>(N), static_cast<int32_t>(M));
  constexpr int NA = MR == 1 ? 2 : 1;
  const float* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = x + (m0 + r) * ldx;
  for (int64_t j = j0; j < j1; ++j) {
    const float* v = L.values + j * k;
    const uint8_t* o = L.nm_off + j * nm_row_bytes(k);
    vf acc[MR][NA];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NA; ++q) acc[r][q] = vzero();
    vi base = lanes;
    int64_t t = 0;
    for (; t + NA * VL <= k; t += NA * VL) {
      for (int q = 0; q < NA; ++q) {
        const vi idx = vi_add(base, nm_offsets(o + (t + q * VL) / 2));
        const vf w = vload(v + t + q * VL);
        for (int r = 0; r < MR; ++r) acc[r][q] = vfma(w, vgather(xr[r], idx), acc[r][q]);
        base = vi_add(base, vi_set1(stride));
      }
    }
    for (; t + VL <= k; t += VL) {
      const vi idx = vi_add(base, nm_offsets(o + t / 2));
      const vf w = vload(v + t);
      for (int r = 0; r < MR; ++r) acc[r][0] = vfma(w, vgather(xr[r], idx), acc[r][0]);
      base = vi_add(base, vi_set1(stride));
    }
    const int64_t c = col_of(L, j);
    for (int r = 0; r < MR; ++r) {
      for (int q = 1; q < NA; ++q) acc[r][0] = vadd(acc[r][0], acc[r][q]);
      float total = vsum(acc[r][0]);
      for (int64_t u = t; u < k; ++u) total += v[u] * xr[r][u / N * M + nm_offset(o, u)];
      out[(m0 + r) * som + c * soj] = total + L.bias[c];
    }
  }
}

template <int MR>
void nm_rows(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t j0, int64_t j1,
             float* out, int64_t som, int64_t soj) {
  // a gather of VL lanes needs whole groups per step and int32 input offsets
  if (VL % L.nm_n == 0 && L.in < (int64_t(1) << 30))
    nm_simd_mr<MR>(L, x, ldx, m0, j0, j1, out, som, soj);
  else
    nm_scalar_mr<MR>(L, x, ldx, m0, j0, j1, out, som, soj);
}
#else
template <int MR>
void nm_rows(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t j0, int64_t j1,
             float* out, int64_t som, int64_t soj) {
  nm_scalar_mr<MR>(L, x, ldx, m0, j0, j1, out, som, soj);
}
#endif

void nm(const LayerView& L, const float* x, int64_t ldx, int64_t m0, int64_t m1, int64_t j0,
        int64_t j1, float* out, int64_t som, int64_t soj) {
  by_row_blocks(m0, m1, [&](auto rb, int64_t m) {
    nm_rows<decltype(rb)::mr>(L, x, ldx, m, j0, j1, out, som, soj);
  });
}

// ---------------------------------------------------------------- tiled kernel
// f(std::integral_constant<int, NACC>) for the width code `wide` (0: 4 vector accumulators per
// neuron, 1: 8, 2: 2, 3: 1, the last only for the tail tiles of a run: kTailWide): the one place
// that maps a width code to its accumulators.
template <typename F>
void by_width(int wide, const F& f) {
  if (wide == 1)
    f(std::integral_constant<int, 8>());
  else if (wide == 2)
    f(std::integral_constant<int, 2>());
  else if (wide == 3)
    f(std::integral_constant<int, 1>());
  else
    f(std::integral_constant<int, 4>());
}

// f(std::integral_constant<int, NACC>, index value) for the width code and the pack's index
// type (int16_t or int32_t): the tiled kernels' dispatch.
template <typename F>
void by_width_and_index(const LayerView& L, int wide, const F& f) {
  by_width(wide, [&](auto na) {
    if (L.idx_bytes == 2)
      f(na, int16_t{});
    else
      f(na, int32_t{});
  });
}

constexpr int JB = 16;  // neurons per output block (their [JB][T] results stay in L1)

template <int T>
void write_tile(const LayerView& L, const float* ybuf, int64_t jb, int64_t je, int64_t ncols,
                int64_t m0, float* out, int64_t som, int64_t soj);

template <int NACC, typename IT>
void tiled_typed(const LayerView& L, const float* tile, int64_t ncols, int64_t j0, int64_t j1,
                 int64_t m0, float* out, int64_t som, int64_t soj) {
  constexpr int T = NACC * VL;
  // registers: AVX2 has 16 (split only with 4 accumulators), AVX-512 32, generic: memory
  constexpr bool kSplit = NACC * 2 * VL <= 32 * 16 && (NACC <= 4 || VL == 16);
  const IT* idx_all = static_cast<const IT*>(L.indices);
  const int64_t k = L.k;
  alignas(64) float ybuf[JB * T];
  for (int64_t jb = j0; jb < j1; jb += JB) {
    const int64_t je = imin(jb + JB, j1);
    for (int64_t j = jb; j < je; ++j) {
      // two accumulator sets (even / odd kept weights): 2 * NACC independent FMA chains
      // hide the FMA latency; they are added at the end.
      vf acc[NACC], acc2[NACC];
      for (int a = 0; a < NACC; ++a) acc[a] = acc2[a] = vzero();
      const float* v = L.values + j * k;
      const IT* ix = idx_all + j * k;
      int64_t t = 0;
      if (kSplit) {
        for (; t + 2 <= k; t += 2) {
          const vf w0 = vbcast(v[t]), w1 = vbcast(v[t + 1]);
          const float* r0 = tile + (int64_t)ix[t] * T;
          const float* r1 = tile + (int64_t)ix[t + 1] * T;
          for (int a = 0; a < NACC; ++a) {
            acc[a] = vfma(w0, vload(r0 + a * VL), acc[a]);
            acc2[a] = vfma(w1, vload(r1 + a * VL), acc2[a]);
          }
        }
      }
      for (; t < k; ++t) {
        const vf w = vbcast(v[t]);
        const float* row = tile + (int64_t)ix[t] * T;
        for (int a = 0; a < NACC; ++a) acc[a] = vfma(w, vload(row + a * VL), acc[a]);
      }
      for (int a = 0; a < NACC; ++a) {
        if (kSplit) acc[a] = vadd(acc[a], acc2[a]);
        vstore(ybuf + (j - jb) * T + a * VL, acc[a]);
      }
    }
    write_tile<T>(L, ybuf, jb, je, ncols, m0, out, som, soj);
  }
}

// ---------------------------------------------------------------- VL x VL transposes
// r[0..VL-1] (VL vectors) -> their transpose, in place.
#if defined(SRIGL_ISA_AVX512)
inline void transpose_vl(vf* r) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);      // a0 b0 a1 b1 (per 128-bit lane)
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);  // a2 b2 a3 b3
  }
  for (int i = 0; i < 16; i += 4)
    for (int h = 0; h < 2; ++h) {
      r[i + h] = _mm512_shuffle_ps(t[i + h], t[i + 2 + h], 0x44);      // a b c d, element 0|2
      r[i + 2 + h] = _mm512_shuffle_ps(t[i + h], t[i + 2 + h], 0xee);  // element 1|3
    }
  // now r[4q + e] (e = 0: elements 0, 1: 2, 2: 1, 3: 3 of each 128-bit lane) holds rows
  // 4q..4q+3 of element column e' in each 128-bit lane
  for (int q = 0; q < 4; ++q) {
    t[q * 4 + 0] = r[q * 4 + 0];
    t[q * 4 + 1] = r[q * 4 + 2];
    t[q * 4 + 2] = r[q * 4 + 1];
    t[q * 4 + 3] = r[q * 4 + 3];
  }
  // t[4q + e]: 128-bit lane L holds rows 4q..4q+3 of column 4L + e
  for (int e = 0; e < 4; ++e) {
    const __m512 a = t[e], b = t[4 + e], c = t[8 + e], d = t[12 + e];
    const __m512 ab_lo = _mm512_shuffle_f32x4(a, b, 0x44);  // a.L0 a.L1 b.L0 b.L1
    const __m512 ab_hi = _mm512_shuffle_f32x4(a, b, 0xee);  // a.L2 a.L3 b.L2 b.L3
    const __m512 cd_lo = _mm512_shuffle_f32x4(c, d, 0x44);
    const __m512 cd_hi = _mm512_shuffle_f32x4(c, d, 0xee);
    r[e] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88);       // a.L0 b.L0 c.L0 d.L0: column e
    r[4 + e] = _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xdd);   // column 4 + e
    r[8 + e] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88);   // column 8 + e
    r[12 + e] = _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xdd);  // column 12 + e
  }
}
#define SRIGL_HAVE_TRANSPOSE 1
#elif defined(SRIGL_ISA_AVX2)
inline void transpose_vl(vf* r) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i + 0] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);      // column 0 (lane 0), 4 (lane 1)
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);      // column 1, 5
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);  // column 2, 6
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);  // column 3, 7
  }
  for (int e = 0; e < 4; ++e) {
    r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
    r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
  }
}
#define SRIGL_HAVE_TRANSPOSE 1
#endif

// Tile rows [i0, i1) of a [in][T] tile from x rows 0..nc-1 (row stride ldx, unit column
// stride): tile[i * T + c] = x[c * ldx + i], zero for c in [nc, T).
void pack_tile(const float* x, int64_t ldx, int64_t nc, int64_t i0, int64_t i1, float* tile,
               int64_t T) {
  int64_t i = i0;
#if defined(SRIGL_HAVE_TRANSPOSE)
  const int64_t cfull = nc / VL * VL;
  for (; i + VL <= i1; i += VL) {
    for (int64_t c = 0; c < cfull; c += VL) {
      vf r[VL];
      for (int q = 0; q < VL; ++q) r[q] = vload(x + (c + q) * ldx + i);
      transpose_vl(r);
      for (int q = 0; q < VL; ++q) vstore(tile + (i + q) * T + c, r[q]);
    }
    for (int64_t q = i; q < i + VL; ++q) {
      for (int64_t c = cfull; c < nc; ++c) tile[q * T + c] = x[c * ldx + q];
      for (int64_t c = nc; c < T; ++c) tile[q * T + c] = 0.0f;
    }
  }
#endif
  for (; i < i1; ++i) {
    for (int64_t c = 0; c < nc; ++c) tile[i * T + c] = x[c * ldx + i];
    for (int64_t c = nc; c < T; ++c) tile[i * T + c] = 0.0f;
  }
}

// Results ybuf [je - jb][T] of neurons jb..je-1 for tile columns 0..ncols-1 -> out (+ bias).
template <int T>
void write_tile(const LayerView& L, const float* ybuf, int64_t jb, int64_t je, int64_t ncols,
                int64_t m0, float* out, int64_t som, int64_t soj) {
  if (soj == 1) {  // y [M, out]: neurons contiguous within a row
    int64_t j = jb;
#if defined(SRIGL_HAVE_TRANSPOSE)
    // all neurons active: VL x VL blocks of ybuf transposed into VL consecutive outputs of
    // VL rows
    if (L.all_active) {
      const int64_t cfull = ncols / VL * VL;
      for (; j + VL <= je; j += VL) {
        const vf b = vload(L.bias + j);
        for (int64_t c = 0; c < cfull; c += VL) {
          vf r[VL];
          for (int q = 0; q < VL; ++q) r[q] = vload(ybuf + (j - jb + q) * T + c);
          transpose_vl(r);
          for (int q = 0; q < VL; ++q) vstore(out + (m0 + c + q) * som + j, vadd(r[q], b));
        }
        for (int64_t c = cfull; c < ncols; ++c)
          for (int64_t q = j; q < j + VL; ++q)
            out[(m0 + c) * som + q] = ybuf[(q - jb) * T + c] + L.bias[q];
      }
    }
#endif
    for (int64_t c = 0; c < ncols; ++c) {
      float* dst = out + (m0 + c) * som;
      for (int64_t q = j; q < je; ++q) {
        const int64_t col = col_of(L, q);
        dst[col] = ybuf[(q - jb) * T + c] + L.bias[col];
      }
    }
  } else {  // transposed output [out, M]: batch columns contiguous within a neuron
    for (int64_t j = jb; j < je; ++j) {
      const int64_t col = col_of(L, j);
      float* dst = out + col * soj + m0 * som;
      const float b = L.bias[col];
      for (int64_t c = 0; c < ncols; ++c) dst[c * som] = ybuf[(j - jb) * T + c] + b;
    }
  }
}

constexpr int KB_JB = 64;  // neurons per block of the blocked kernel ([KB_JB][T] sums in L1)

template <int NACC, typename IT>
void tiled_blocked_typed(const LayerView& L, const float* tile, int64_t ncols, int64_t j0,
                         int64_t j1, int64_t m0, float* out, int64_t som, int64_t soj) {
  constexpr int T = NACC * VL;
  constexpr bool kSplit = NACC <= 4 || VL == 16;
  const IT* idx_all = static_cast<const IT*>(L.indices);
  const int64_t k = L.k, nch = L.kb_nchunks;
  alignas(64) float ybuf[KB_JB * T];
  for (int64_t jb = j0; jb < j1; jb += KB_JB) {
    const int64_t je = imin(jb + KB_JB, j1);
    for (int64_t i = 0; i < (je - jb) * T; ++i) ybuf[i] = 0.0f;
    for (int64_t c = 0; c < nch; ++c) {
      for (int64_t j = jb; j < je; ++j) {
        const int32_t* ptr = L.kb_ptr + j * (nch + 1) + c;
        const int64_t t0 = ptr[0], t1 = ptr[1];
        if (t0 == t1) continue;
        float* yj = ybuf + (j - jb) * T;
        vf acc[NACC], acc2[NACC];
        for (int a = 0; a < NACC; ++a) {
          acc[a] = vload(yj + a * VL);
          acc2[a] = vzero();
        }
        const float* v = L.values + j * k;
        const IT* ix = idx_all + j * k;
        int64_t t = t0;
        if (kSplit) {  // two FMA chains per accumulator, as in tiled_typed
          for (; t + 2 <= t1; t += 2) {
            const vf w0 = vbcast(v[t]), w1 = vbcast(v[t + 1]);
            const float* r0 = tile + (int64_t)ix[t] * T;
            const float* r1 = tile + (int64_t)ix[t + 1] * T;
            for (int a = 0; a < NACC; ++a) {
              acc[a] = vfma(w0, vload(r0 + a * VL), acc[a]);
              acc2[a] = vfma(w1, vload(r1 + a * VL), acc2[a]);
            }
          }
        }
        for (; t < t1; ++t) {
          const vf w = vbcast(v[t]);
          const float* row = tile + (int64_t)ix[t] * T;
          for (int a = 0; a < NACC; ++a) acc[a] = vfma(w, vload(row + a * VL), acc[a]);
        }
        for (int a = 0; a < NACC; ++a) vstore(yj + a * VL, kSplit ? vadd(acc[a], acc2[a]) : acc[a]);
      }
    }
    write_tile<T>(L, ybuf, jb, je, ncols, m0, out, som, soj);
  }
}

void tiled_blocked(const LayerView& L, int wide, const float* tile, int64_t ncols, int64_t j0,
                   int64_t j1, int64_t m0, float* out, int64_t som, int64_t soj) {
  by_width_and_index(L, wide, [&](auto na, auto ix) {
    tiled_blocked_typed<decltype(na)::value, decltype(ix)>(L, tile, ncols, j0, j1, m0, out, som,
                                                           soj);
  });
}

int tile_width(int wide) {
  int columns = 0;
  by_width(wide, [&](auto na) { columns = decltype(na)::value * VL; });
  return columns;
}

void tiled(const LayerView& L, int wide, const float* tile, int64_t ncols, int64_t j0,
           int64_t j1, int64_t m0, float* out, int64_t som, int64_t soj) {
  by_width_and_index(L, wide, [&](auto na, auto ix) {
    tiled_typed<decltype(na)::value, decltype(ix)>(L, tile, ncols, j0, j1, m0, out, som, soj);
  });
}

}  // namespace
}  // namespace SRIGL_NS

extern const KernelTable SRIGL_TABLE = {
    SRIGL_TABLE_NAME,       SRIGL_NS::rows,       SRIGL_NS::perm_any,
    SRIGL_NS::perm_supports, SRIGL_NS::tile_width, SRIGL_NS::tiled,
    SRIGL_NS::tiled_blocked, SRIGL_NS::nm,         SRIGL_NS::pack_tile,
};

}  // namespace srigl

// Direct condensed Conv2d micro-kernels, compiled once per ISA (see conv_kernels.h).
//
// A constant fan-in convolution keeps k taps (c, dy, dx) per active output channel. With the
// input laid out as planes of width Wq, every tap of channel j adds value * (one contiguous run
// of a plane) to j's output grid: output position q = oy * Wq + ox reads plane[q + off], off =
// the tap's plane, row and column offset. For stride 1 the planes are the (zero-padded) input
// channels; for stride s the driver splits the input once into s_h * s_w phase planes, which
// makes the strided convolution a stride-1 one over the phases. Grid positions with ox >= Wo
// are computed on the way and dropped on write-out. A tile keeps NC channels x NV vectors of
// accumulators in registers; the vector type is a GCC vector extension of VW floats.
//
// Define SRIGL_NS, SRIGL_TABLE, SRIGL_TABLE_NAME and one of SRIGL_ISA_{GENERIC,AVX2,AVX512}.
#include "conv_kernels.h"
#include "epilogue.h"

namespace srigl_conv {
namespace SRIGL_NS {

#if defined(SRIGL_ISA_AVX512)
constexpr int VW = 16;
#elif defined(SRIGL_ISA_AVX2)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif

typedef float vf __attribute__((vector_size(VW * sizeof(float))));

static inline vf loadu(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

static inline void storeu(float* p, vf v) { __builtin_memcpy(p, &v, sizeof(v)); }

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kMaxTile = 8 * VW;
constexpr int kMaxBlock = 4;

// Full tile: NCH channels x NV vectors, positions [q0, q0 + NV * VW).
template <int NV, int NCH>
static inline void tile_full(const float* src, const int32_t* offs, const float* vals, int64_t k,
                             int64_t q0, float* tmp) {
  vf acc[NCH][NV];
#pragma GCC unroll 8
  for (int c = 0; c < NCH; ++c)
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) acc[c][i] = vf{};
  for (int64_t t = 0; t < k; ++t) {
#pragma GCC unroll 8
    for (int c = 0; c < NCH; ++c) {
      const float* p = src + offs[c * k + t] + q0;
      const vf v = vf{} + vals[c * k + t];
#pragma GCC unroll 8
      for (int i = 0; i < NV; ++i) acc[c][i] += v * loadu(p + i * VW);
    }
  }
#pragma GCC unroll 8
  for (int c = 0; c < NCH; ++c)
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) storeu(tmp + c * kMaxTile + i * VW, acc[c][i]);
}

// The first n positions of a tile, scalar (reads nothing past position q0 + n).
static inline void tile_tail(const float* src, const int32_t* offs, const float* vals, int64_t k,
                             int64_t q0, int64_t n, int nch, float* tmp) {
  for (int c = 0; c < nch; ++c) {
    float* acc = tmp + c * kMaxTile;
    for (int64_t i = 0; i < n; ++i) acc[i] = 0.f;
    for (int64_t t = 0; t < k; ++t) {
      const float* p = src + offs[c * k + t] + q0;
      const float v = vals[c * k + t];
      for (int64_t i = 0; i < n; ++i) acc[i] += v * p[i];
    }
  }
}

// Grid positions [q0, q0 + n) of one channel's tile, plus bias (and the epilogue: residual
// plane res_plane of the output's layout, or null; ReLU), into its output plane.
template <bool RELU>
static inline void write_out(const float* acc, float b, int64_t q0, int64_t n, int64_t Wq,
                             int64_t Wo, float* out_plane, const float* res_plane) {
  if (Wq == Wo) {
    const float* res = res_plane ? res_plane + q0 : nullptr;
    srigl_epilogue::store_maybe_res<RELU>(out_plane + q0, acc, b, res, n);
    return;
  }
  int64_t q = q0;
  const int64_t end = q0 + n;
  while (q < end) {
    const int64_t oy = q / Wq, ox = q - oy * Wq;
    if (ox >= Wo) {
      q = (oy + 1) * Wq;
      continue;
    }
    const int64_t run = min64(Wo - ox, end - q);
    const int64_t at = oy * Wo + ox;
    const float* res = res_plane ? res_plane + at : nullptr;
    srigl_epilogue::store_maybe_res<RELU>(out_plane + at, acc + (q - q0), b, res, run);
    q += run;
  }
}

template <int NV, int NC>
static void run_variant(const ConvTask& T, int64_t w0, int64_t w1) {
  constexpr int64_t TILE = NV * VW;
  alignas(64) float tmp[kMaxBlock * kMaxTile];
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t blk = w % T.nblocks, rest = w / T.nblocks;
    const int64_t tile = rest % T.ntiles, img = rest / T.ntiles;
    const int64_t q0 = tile * TILE, j0 = blk * NC;
    const int nch = static_cast<int>(min64(NC, T.n - j0));
    const float* s = T.src + img * T.img_stride;
    const int32_t* o = T.offs + j0 * T.k;
    const float* v = T.values + j0 * T.k;
    const int64_t valid = min64(TILE, T.L - q0);
    if (q0 + TILE <= T.full_end) {
      if (nch == NC) {
        tile_full<NV, NC>(s, o, v, T.k, q0, tmp);
      } else {
        for (int c = 0; c < nch; ++c)
          tile_full<NV, 1>(s, o + c * T.k, v + c * T.k, T.k, q0, tmp + c * kMaxTile);
      }
    } else {
      tile_tail(s, o, v, T.k, q0, valid, nch, tmp);
    }
    for (int c = 0; c < nch; ++c) {
      const int64_t ch = T.active[j0 + c];
      const int64_t plane = (img * T.out_ch + ch) * (T.Ho * T.Wo);
      const float* res = T.residual ? T.residual + plane : nullptr;
      if (T.relu)
        write_out<true>(tmp + c * kMaxTile, T.bias[ch], q0, valid, T.Wq, T.Wo, T.out + plane, res);
      else
        write_out<false>(tmp + c * kMaxTile, T.bias[ch], q0, valid, T.Wq, T.Wo, T.out + plane, res);
    }
  }
}

// Variants: (NV vectors per channel, NC channels per tile).
constexpr int kNV[] = {4, 8, 2, 4, 2, 8};
constexpr int kNC[] = {2, 1, 4, 3, 2, 2};
constexpr int kVariants = 6;

static int64_t tile_of(int v) { return int64_t(kNV[v]) * VW; }
static int64_t block_of(int v) { return kNC[v]; }

static void run(const ConvTask& T, int v, int64_t w0, int64_t w1) {
  switch (v) {
    case 0: run_variant<4, 2>(T, w0, w1); break;
    case 1: run_variant<8, 1>(T, w0, w1); break;
    case 2: run_variant<2, 4>(T, w0, w1); break;
    case 3: run_variant<4, 3>(T, w0, w1); break;
    case 4: run_variant<2, 2>(T, w0, w1); break;
    default: run_variant<8, 2>(T, w0, w1); break;
  }
}

}  // namespace SRIGL_NS

const ConvTable SRIGL_TABLE = {SRIGL_TABLE_NAME, SRIGL_NS::kVariants, SRIGL_NS::tile_of,
                               SRIGL_NS::block_of, SRIGL_NS::run};

}  // namespace srigl_conv

// Direct condensed Conv2d on CPU (float32, NCHW), the `fused` backend's conv kernel.
//
// A constant fan-in convolution keeps k taps (c, dy, dx) per active output channel. With the
// input laid out as "planes" of width Wq, every tap of output channel j adds
// value * (one contiguous run of a plane) to the output grid of j: for stride 1 the planes are the
// (zero-padded) input channels, so output position q = oy * Wq + ox reads plane[q + dy*dh*Wq +
// dx*dw]; for stride s the input is split once into s_h * s_w phase planes
// (plane[c, a, b][i, j] = padded[c, i*s_h + a, j*s_w + b]), which turns the strided convolution
// into a stride-1 one over the phases. Positions with ox >= Wo are computed on the way (the grid
// is Wq wide) and dropped when the tile is written out. No im2col copy is made: with stride 1
// and no padding the input tensor itself is read; otherwise one padded / phase copy of the input
// (the size of the input, not k times it).
//
// Work is split over (image, tile of TILE grid positions, block of NC output channels) with
// at::parallel_for (torch's intra-op threads); a tile keeps NC x NV vector accumulators in
// registers. The vector type is a GCC vector extension: 16 floats with AVX-512, 8 with AVX/AVX2,
// 4 otherwise, so the same source compiles to each instruction set.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace {

#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif
constexpr int NV = 4;           // vectors per channel in a tile
constexpr int NC = 2;           // output channels per tile
constexpr int TILE = NV * VW;   // grid positions per tile

typedef float vf __attribute__((vector_size(VW * sizeof(float))));

inline vf loadu(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// acc[c][i] = sum_t vals[c][t] * src[offs[c][t] + q0 + i*VW ...] for NCH channels, full tile.
template <int NCH>
inline void tile_full(const float* src, const int32_t* offs, const float* vals, int64_t k,
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
    for (int i = 0; i < NV; ++i) storeu(tmp + c * TILE + i * VW, acc[c][i]);
}

// The same for the first n (< TILE) positions, scalar (reads nothing past position q0 + n).
inline void tile_tail(const float* src, const int32_t* offs, const float* vals, int64_t k,
                      int64_t q0, int64_t n, int nch, float* tmp) {
  for (int c = 0; c < nch; ++c) {
    float* acc = tmp + c * TILE;
    for (int64_t i = 0; i < n; ++i) acc[i] = 0.f;
    for (int64_t t = 0; t < k; ++t) {
      const float* p = src + offs[c * k + t] + q0;
      const float v = vals[c * k + t];
      for (int64_t i = 0; i < n; ++i) acc[i] += v * p[i];
    }
  }
}

// Write grid positions [q0, q0 + n) of one channel's tile (plus bias) into its output plane.
inline void write_out(const float* acc, float b, int64_t q0, int64_t n, int64_t Wq, int64_t Wo,
                      float* out_plane) {
  if (Wq == Wo) {
    float* dst = out_plane + q0;
    for (int64_t i = 0; i < n; ++i) dst[i] = acc[i] + b;
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
    const int64_t run = std::min(Wo - ox, end - q);
    float* dst = out_plane + oy * Wo + ox;
    const float* s = acc + (q - q0);
    for (int64_t r = 0; r < run; ++r) dst[r] = s[r] + b;
    q += run;
  }
}

}  // namespace

// The planes the kernel reads: x [N, C, H, W] -> [N, C * sh * sw, Hq, Wq] (+ TILE floats of
// zero slack at the end), plane (c, a, b)[i, j] = x_padded[c, i * sh + a, j * sw + b].
torch::Tensor conv_planes(const torch::Tensor& x, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                          int64_t Hq, int64_t Wq) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t P = C * sh * sw, plane = Hq * Wq;
  auto buf = torch::empty({N * P * plane + TILE}, x.options());
  float* dst = buf.data_ptr<float>();
  const float* src = x.data_ptr<float>();
  std::fill(dst + N * P * plane, dst + N * P * plane + TILE, 0.f);
  at::parallel_for(0, N * C, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t nc = lo; nc < hi; ++nc) {
      const float* xs = src + nc * H * W;
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          float* d = dst + (nc * sh * sw + a * sw + b) * plane;
          for (int64_t i = 0; i < Hq; ++i) {
            const int64_t row = i * sh + a - ph;
            float* drow = d + i * Wq;
            if (row < 0 || row >= H) {
              std::fill(drow, drow + Wq, 0.f);
              continue;
            }
            const float* xrow = xs + row * W;
            if (sw == 1) {
              // columns j with 0 <= j - pw < W are copied, the rest is zero
              const int64_t j0 = std::min(pw, Wq), j1 = std::min(pw + W, Wq);
              std::fill(drow, drow + j0, 0.f);
              std::memcpy(drow + j0, xrow + (j0 - pw), (j1 - j0) * sizeof(float));
              std::fill(drow + j1, drow + Wq, 0.f);
            } else {
              for (int64_t j = 0; j < Wq; ++j) {
                const int64_t col = j * sw + b - pw;
                drow[j] = (col >= 0 && col < W) ? xrow[col] : 0.f;
              }
            }
          }
        }
    }
  });
  return buf;
}

// y [N, out, Ho, Wo] of the condensed convolution over planes `src` (see conv_planes) or, with
// stride 1 and no padding, over x itself (src = x, P = C, Wq = W; reads stop at the tensor end).
//   src: float32 planes, image stride `img_stride` floats; offs: int32 [n, k] tap offsets into an
//   image's planes; values: float32 [n, k]; active: int64 [n]; bias: float32 [out].
torch::Tensor conv_direct(const torch::Tensor& src, int64_t N, int64_t img_stride,
                          const torch::Tensor& offs, const torch::Tensor& values,
                          const torch::Tensor& active, const torch::Tensor& bias,
                          bool all_active, int64_t Ho, int64_t Wo, int64_t Wq, bool padded) {
  TORCH_CHECK(src.dtype() == torch::kFloat32 && values.dtype() == torch::kFloat32,
              "conv_direct: float32 only");
  TORCH_CHECK(offs.dtype() == torch::kInt32 && active.dtype() == torch::kInt64,
              "conv_direct: offs int32, active int64");
  const int64_t out_ch = bias.size(0), n = values.size(0), k = values.size(1);
  auto opts = bias.options();
  torch::Tensor out = all_active
                          ? torch::empty({N, out_ch, Ho, Wo}, opts)
                          : bias.view({1, out_ch, 1, 1}).expand({N, out_ch, Ho, Wo}).contiguous();
  if (n == 0 || N == 0 || Ho == 0 || Wo == 0) return out;
  const int64_t L = (Ho - 1) * Wq + Wo;  // grid positions holding the outputs
  const int64_t ntiles = (L + TILE - 1) / TILE;
  const int64_t nblocks = (n + NC - 1) / NC;
  const float* S = src.data_ptr<float>();
  const int32_t* O = offs.data_ptr<int32_t>();
  const float* V = values.data_ptr<float>();
  const int64_t* A = active.data_ptr<int64_t>();
  const float* B = bias.data_ptr<float>();
  float* Y = out.data_ptr<float>();
  const int64_t plane_out = Ho * Wo;
  // Without slack after the planes (x read in place) the last partial tile is computed scalar.
  const int64_t full_end = padded ? ntiles * TILE : (L / TILE) * TILE;
  at::parallel_for(0, N * ntiles * nblocks, 1, [&](int64_t lo, int64_t hi) {
    alignas(64) float tmp[NC * TILE];
    for (int64_t w = lo; w < hi; ++w) {
      const int64_t blk = w % nblocks, rest = w / nblocks;
      const int64_t tile = rest % ntiles, img = rest / ntiles;
      const int64_t q0 = tile * TILE;
      const int64_t j0 = blk * NC;
      const int nch = static_cast<int>(std::min<int64_t>(NC, n - j0));
      const float* s = S + img * img_stride;
      const int32_t* o = O + j0 * k;
      const float* v = V + j0 * k;
      const int64_t valid = std::min<int64_t>(TILE, L - q0);
      if (q0 + TILE <= full_end) {
        if (nch == NC)
          tile_full<NC>(s, o, v, k, q0, tmp);
        else
          tile_full<1>(s, o, v, k, q0, tmp);
      } else {
        tile_tail(s, o, v, k, q0, valid, nch, tmp);
      }
      for (int c = 0; c < nch; ++c) {
        const int64_t ch = A[j0 + c];
        write_out(tmp + c * TILE, B[ch], q0, valid, Wq, Wo, Y + (img * out_ch + ch) * plane_out);
      }
    }
  });
  return out;
}

int64_t vector_width() { return VW; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv_planes", &conv_planes, "padded / phase planes of the input");
  m.def("conv_direct", &conv_direct, "direct condensed conv2d over planes");
  m.def("vector_width", &vector_width, "floats per vector register the kernel was built for");
}

// srigl_conv::* operators: the direct condensed Conv2d of the `fused` backend on CPU (float32,
// NCHW). `conv_planes` builds the zero-padded (stride 1) or phase-split (stride > 1) planes of
// the input (`plane_stride` floats apart: see backends/fused_conv.py's plane_stride),
// `conv_direct` runs a micro-kernel variant over them (or over the input itself for stride 1
// without padding), split over (image, tile, channel block) work items on the
// extension's work-claiming pool (work_pool.h, torch's thread count). No im2col copy is made
// (see conv_impl.h).
//
// Variant code: isa * 100 + v (isa 0 generic, 1 avx2, 2 avx512; v indexes the (vectors per
// channel, channels per tile) table of conv_impl.h); -1 = the default (best ISA, v = 0).
// Epilogue: an optional residual of the output's shape is added, then an optional ReLU, as each
// output tile is written (a ResNet block's ReLU and skip add cost no pass of their own).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "conv_kernels.h"
#include "cpu_isa.h"
#include "work_pool.h"

namespace srigl_conv {
namespace {

constexpr int64_t kSlack = 256;  // zero floats after the planes: any tile may overrun by < 256

int cpu_isa() { return srigl_isa::detected_isa(); }

const ConvTable& table_for(int isa) {
  return isa >= 2 ? kConvAvx512 : isa == 1 ? kConvAvx2 : kConvGeneric;
}

}  // namespace

at::Tensor conv_planes(const at::Tensor& x_in, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                       int64_t Hq, int64_t Wq, int64_t plane_stride) {
  TORCH_CHECK(x_in.dim() == 4 && x_in.scalar_type() == at::kFloat && x_in.device().is_cpu(),
              "srigl_conv::conv_planes: x must be a float32 CPU tensor [N, C, H, W]");
  TORCH_CHECK(sh >= 1 && sw >= 1 && ph >= 0 && pw >= 0 && Hq >= 1 && Wq >= 1,
              "srigl_conv::conv_planes: bad geometry");
  if (plane_stride < 0) plane_stride = Hq * Wq;
  TORCH_CHECK(plane_stride >= Hq * Wq, "srigl_conv::conv_planes: plane_stride ", plane_stride,
              " is below Hq * Wq = ", Hq * Wq);
  const at::Tensor x = x_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t plane = plane_stride, per_img = C * sh * sw * plane, gap = plane - Hq * Wq;
  at::Tensor buf = at::empty({N * per_img + kSlack}, x.options());
  float* dst = buf.data_ptr<float>();
  const float* src = x.data_ptr<float>();
  std::fill(dst + N * per_img, dst + N * per_img + kSlack, 0.f);
  srigl_pool::parallel_ranges(N * C, true, [&](int64_t lo, int64_t hi) {
    for (int64_t nc = lo; nc < hi; ++nc) {
      const float* xs = src + nc * H * W;
      for (int64_t a = 0; a < sh; ++a)
        for (int64_t b = 0; b < sw; ++b) {
          float* d = dst + (nc * sh * sw + a * sw + b) * plane;
          std::fill(d + Hq * Wq, d + Hq * Wq + gap, 0.f);  // read only for dropped positions
          for (int64_t i = 0; i < Hq; ++i) {
            const int64_t row = i * sh + a - ph;
            float* drow = d + i * Wq;
            if (row < 0 || row >= H) {
              std::fill(drow, drow + Wq, 0.f);
              continue;
            }
            const float* xrow = xs + row * W;
            if (sw == 1) {  // columns j with 0 <= j - pw < W are copied, the rest is zero
              const int64_t j0 = std::min(pw, Wq), j1 = std::min(pw + W, Wq);
              std::fill(drow, drow + j0, 0.f);
              if (j1 > j0) std::memcpy(drow + j0, xrow + (j0 - pw), (j1 - j0) * sizeof(float));
              std::fill(drow + std::max(j0, j1), drow + Wq, 0.f);
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

at::Tensor conv_direct(const at::Tensor& src, int64_t n_img, int64_t img_stride,
                       const at::Tensor& offs, const at::Tensor& values, const at::Tensor& active,
                       const at::Tensor& bias, bool all_active, int64_t Ho, int64_t Wo,
                       int64_t Wq, bool padded, int64_t variant,
                       const c10::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK(src.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat &&
                  bias.scalar_type() == at::kFloat,
              "srigl_conv::conv_direct: float32 only");
  TORCH_CHECK(offs.scalar_type() == at::kInt && active.scalar_type() == at::kLong,
              "srigl_conv::conv_direct: offs must be int32 and active int64");
  TORCH_CHECK(src.is_contiguous() && offs.is_contiguous() && values.is_contiguous() &&
                  active.is_contiguous() && bias.is_contiguous(),
              "srigl_conv::conv_direct: contiguous tensors only");
  TORCH_CHECK(values.dim() == 2 && offs.sizes() == values.sizes() &&
                  active.numel() == values.size(0),
              "srigl_conv::conv_direct: values/offs [n, k] and active [n]");
  const int64_t out_ch = bias.size(0), n = values.size(0), k = values.size(1);
  const bool has_res = residual.has_value() && residual->defined();
  if (has_res)
    TORCH_CHECK(residual->scalar_type() == at::kFloat && residual->is_contiguous() &&
                    residual->device().is_cpu() &&
                    residual->sizes() == at::IntArrayRef({n_img, out_ch, Ho, Wo}),
                "srigl_conv::conv_direct: the residual must be a contiguous float32 CPU tensor "
                "of the output's shape [", n_img, ", ", out_ch, ", ", Ho, ", ", Wo, "]");
  // a new tensor, also for inactive channels: with one image and a 1 x 1 output,
  // bias.expand(...).contiguous() would be the bias itself, and the kernel would write into it
  at::Tensor out = at::empty({n_img, out_ch, Ho, Wo}, bias.options());
  if (!all_active) {  // inactive channels hold the epilogue of their bias (active: overwritten)
    out.copy_(bias.view({1, out_ch, 1, 1}).expand({n_img, out_ch, Ho, Wo}));
    if (has_res) out.add_(*residual);
    if (relu) out.relu_();
  }
  if (n == 0 || n_img == 0 || Ho <= 0 || Wo <= 0) return out;
  int isa = cpu_isa(), v = 0;
  if (variant >= 0) {
    TORCH_CHECK(variant / 100 <= cpu_isa(), "srigl_conv::conv_direct: variant ", variant,
                " needs an ISA this CPU lacks");
    isa = static_cast<int>(variant / 100);
    v = static_cast<int>(variant % 100);
  }
  const ConvTable& table = table_for(isa);
  TORCH_CHECK(v < table.nvariants, "srigl_conv::conv_direct: no variant ", variant);
  const int64_t TILE = table.tile(v), NC = table.block(v);
  ConvTask task;
  task.src = src.data_ptr<float>();
  task.img_stride = img_stride;
  task.offs = offs.data_ptr<int32_t>();
  task.values = values.data_ptr<float>();
  task.active = active.data_ptr<int64_t>();
  task.bias = bias.data_ptr<float>();
  task.out = out.data_ptr<float>();
  task.residual = has_res ? residual->data_ptr<float>() : nullptr;
  task.relu = relu;
  task.out_ch = out_ch;
  task.n = n;
  task.k = k;
  task.Ho = Ho;
  task.Wo = Wo;
  task.Wq = Wq;
  task.L = (Ho - 1) * Wq + Wo;
  task.ntiles = (task.L + TILE - 1) / TILE;
  task.nblocks = (n + NC - 1) / NC;
  // with slack after the planes every tile is a full vector tile; reading x in place, the
  // last partial tile is computed scalar
  task.full_end = padded ? task.ntiles * TILE : (task.L / TILE) * TILE;
  const int64_t items = n_img * task.ntiles * task.nblocks;
  srigl_pool::parallel_ranges(items, true,
                              [&](int64_t lo, int64_t hi) { table.run(task, v, lo, hi); });
  return out;
}

int64_t conv_isa() { return cpu_isa(); }

int64_t conv_nvariants(int64_t isa) { return table_for(static_cast<int>(isa)).nvariants; }

}  // namespace srigl_conv

TORCH_LIBRARY(srigl_conv, m) {
  m.def("conv_planes(Tensor x, int sh, int sw, int ph, int pw, int hq, int wq, "
        "int plane_stride=-1) -> Tensor");
  m.def("conv_direct(Tensor src, int n_img, int img_stride, Tensor offs, Tensor values, "
        "Tensor active, Tensor bias, bool all_active, int ho, int wo, int wq, bool padded, "
        "int variant, Tensor? residual=None, bool relu=False) -> Tensor");
  m.def("conv_isa() -> int", &srigl_conv::conv_isa);
  m.def("conv_nvariants(int isa) -> int", &srigl_conv::conv_nvariants);
  // where this extension's parallel jobs run (work_pool.h): 0 pool, 1 team, 2 auto, -1 asks
  m.def("conv_pool_set_mode(int mode) -> int", &srigl_pool::set_parallel_mode);
}

TORCH_LIBRARY_IMPL(srigl_conv, CPU, m) {
  m.impl("conv_planes", &srigl_conv::conv_planes);
  m.impl("conv_direct", &srigl_conv::conv_direct);
}

// srigl_dense::* operators: a hand-written dense Linear kernel (the strong dense baseline of
// the `dense_kernel` backend) and the machine probes of suite/bench/roofline.py (FMA peak,
// read bandwidth). Per-ISA micro-kernels in dense_impl.h; the extension's work-claiming pool
// (work_pool.h, same thread count as torch) splits the output rows by panels of kDensePanel
// rows; the probes use OpenMP teams of the thread count asked for.
//
// Variant code: isa * 1000 + family * 100 + parallel
//   isa 0 generic, 1 avx2, 2 avx512; family 0 gemv, 1 tile, 2 tile over input chunks.
#include <ATen/ATen.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_isa.h"
#include "dense_kernels.h"
#include "work_pool.h"

namespace srigl_dense {
namespace {

srigl_isa::IsaCap g_isa;  // lowered by dense_cap_isa (a failed self-check)

int cpu_isa() { return g_isa.level(); }

const srigl_isa::PerIsa<DenseTable> kTables{kDenseGeneric, kDenseAvx2, kDenseAvx512};

using srigl_pool::split;

int64_t npanels_of(int64_t out_f) { return (out_f + kDensePanel - 1) / kDensePanel; }

void check_pack(const at::Tensor& pack, int64_t in, int64_t out_f) {
  TORCH_CHECK(pack.device().is_cpu() && pack.scalar_type() == at::kFloat && pack.dim() == 3 &&
                  pack.is_contiguous() && pack.size(2) == kDensePanel,
              "srigl_dense: pack must be a contiguous float32 CPU tensor made by dense_pack");
  TORCH_CHECK(pack.size(0) == npanels_of(out_f) && pack.size(1) == in + 1,
              "srigl_dense: pack ", pack.sizes(), " does not hold a layer ", in, " -> ", out_f);
}

}  // namespace

// weight float32 [out, in], bias float32 [out] -> pack [ceil(out / P), in + 1, P]
at::Tensor dense_pack(const at::Tensor& weight, const at::Tensor& bias) {
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 2,
              "srigl_dense::dense_pack: weight must be a float32 CPU tensor [out, in], got ",
              weight.scalar_type(), " ", weight.sizes());
  const int64_t out_f = weight.size(0), in = weight.size(1);
  TORCH_CHECK(bias.device().is_cpu() && bias.scalar_type() == at::kFloat && bias.dim() == 1 &&
                  bias.size(0) == out_f,
              "srigl_dense::dense_pack: bias must be float32 [", out_f, "], got ",
              bias.scalar_type(), " ", bias.sizes());
  const int64_t np = npanels_of(out_f), P = kDensePanel;
  at::Tensor padded = at::zeros({np * P, in + 1}, weight.options());
  padded.narrow(0, 0, out_f).narrow(1, 0, in).copy_(weight);
  padded.narrow(0, 0, out_f).select(1, in).copy_(bias);
  // [np * P, in + 1] -> [np, P, in + 1] -> [np, in + 1, P]
  return padded.view({np, P, in + 1}).transpose(1, 2).contiguous();
}

int64_t dense_isa() { return cpu_isa(); }
int64_t dense_detected_isa() { return srigl_isa::detected_isa(); }

// Never run ISA levels above `cap` in this process (0 generic, 1 avx2, 2 avx512).
int64_t dense_cap_isa(int64_t cap) {
  return g_isa.lower_to(cap);
}

int64_t dense_runs_here(int64_t variant) {
  const int64_t isa = variant / 1000, family = variant / 100 % 10, par = variant % 10;
  return variant >= 0 && isa <= cpu_isa() && family <= 2 && par <= 1 && variant % 100 < 10;
}

// The variant the static rule picks for `batch` rows: best ISA; gemv for the few batch rows
// one gemv pass holds, else the register tile (over input chunks where the input is long);
// parallel when torch has more than one thread.
int64_t dense_static_variant(int64_t batch, int64_t in) {
  const int isa = cpu_isa();
  const int64_t gemv_rows = isa == 2 ? 4 : 2;
  const int64_t family = batch <= gemv_rows ? 0 : in > 2 * kDenseChunk ? 2 : 1;
  return isa * 1000 + family * 100 + (srigl_pool::threads() > 1 ? 1 : 0);
}

// x [..., in] float32 (any leading dims, unit column stride or copied), pack of dense_pack
// -> [..., out_features]
at::Tensor dense_linear_variant(const at::Tensor& x, const at::Tensor& pack, int64_t out_features,
                                int64_t variant) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.dim() >= 1,
              "srigl_dense::dense_linear: x must be a float32 CPU tensor [..., in], got ",
              x.scalar_type(), " on ", x.device());
  const int64_t in = x.size(-1);
  check_pack(pack, in, out_features);
  TORCH_CHECK(dense_runs_here(variant), "srigl_dense: variant ", variant,
              " does not run here (ISA level ", cpu_isa(), ")");
  at::Tensor x2 = x.reshape({-1, in});
  if (x2.size(0) > 0 && (x2.stride(1) != 1 || x2.stride(0) < in)) x2 = x2.contiguous();
  const int64_t B = x2.size(0);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(out_features);
  at::Tensor out = at::empty(shape, x.options());
  if (B == 0 || out_features == 0) return out;
  const DenseTable& t = kTables.at(static_cast<int>(variant / 1000));
  const int family = static_cast<int>(variant / 100 % 10);
  const float* xp = x2.data_ptr<float>();
  const int64_t ldx = x2.stride(0);
  const float* pp = pack.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const int64_t np = pack.size(0);
  srigl_pool::parallel_ranges(np, variant % 10 != 0, [&](int64_t lo, int64_t hi) {
    t.panels(family, xp, ldx, B, in, pp, lo, hi, out_features, op, out_features);
  });
  return out;
}

at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& pack, int64_t out_features) {
  const int64_t in = x.dim() >= 1 ? x.size(-1) : 0;
  const int64_t batch = in > 0 ? x.numel() / in : 0;
  return dense_linear_variant(x, pack, out_features, dense_static_variant(batch, in));
}

// ------------------------------------------------------------------ machine probes
// FLOPs one thread does per iteration of dense_probe_fma at the current ISA level.
int64_t dense_probe_fma_flops_per_iter() { return kTables.at(cpu_isa()).fma_flops_per_iter(); }

// `threads` threads each run `iters` iterations of independent FMA chains; returns a checksum.
double dense_probe_fma(int64_t iters, int64_t threads) {
  const DenseTable& t = kTables.at(cpu_isa());
  TORCH_CHECK(iters >= 0 && threads >= 1, "srigl_dense::dense_probe_fma: iters >= 0 and "
              "threads >= 1 required, got ", iters, ", ", threads);
  double total = 0.0;
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(+ : total)
  total += t.fma_loop(iters, 1.0f + 0.01f * static_cast<float>(omp_get_thread_num()));
  return total;
}

// `threads` threads each sum their share of buf (float32, contiguous) `reps` times; returns
// the sum (bytes read: buf.numel() * 4 * reps).
double dense_probe_read(const at::Tensor& buf, int64_t reps, int64_t threads) {
  TORCH_CHECK(buf.device().is_cpu() && buf.scalar_type() == at::kFloat && buf.is_contiguous(),
              "srigl_dense::dense_probe_read: buf must be a contiguous float32 CPU tensor");
  TORCH_CHECK(reps >= 0 && threads >= 1, "srigl_dense::dense_probe_read: reps >= 0 and "
              "threads >= 1 required, got ", reps, ", ", threads);
  const DenseTable& t = kTables.at(cpu_isa());
  const float* p = buf.data_ptr<float>();
  const int64_t n = buf.numel();
  double total = 0.0;
#pragma omp parallel num_threads(static_cast<int>(threads)) reduction(+ : total)
  {
    int64_t lo, hi;
    split(n, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
    total += t.read_sum(p + lo, hi - lo, reps);
  }
  return total;
}

}  // namespace srigl_dense

TORCH_LIBRARY(srigl_dense, m) {
  m.def("dense_pack(Tensor weight, Tensor bias) -> Tensor");
  m.def("dense_linear(Tensor x, Tensor pack, int out_features) -> Tensor");
  m.def("dense_linear_variant(Tensor x, Tensor pack, int out_features, int variant) -> Tensor");
  m.def("dense_static_variant(int batch, int in_features) -> int",
        &srigl_dense::dense_static_variant);
  m.def("dense_runs_here(int variant) -> int", &srigl_dense::dense_runs_here);
  m.def("dense_isa() -> int", &srigl_dense::dense_isa);
  // where this extension's parallel jobs run (work_pool.h): 0 pool, 1 team, 2 auto, -1 asks
  m.def("dense_pool_set_mode(int mode) -> int", &srigl_pool::set_parallel_mode);
  m.def("dense_detected_isa() -> int", &srigl_dense::dense_detected_isa);
  m.def("dense_cap_isa(int cap) -> int", &srigl_dense::dense_cap_isa);
  m.def("dense_probe_fma_flops_per_iter() -> int", &srigl_dense::dense_probe_fma_flops_per_iter);
  m.def("dense_probe_fma(int iters, int threads) -> float", &srigl_dense::dense_probe_fma);
  m.def("dense_probe_read(Tensor buf, int reps, int threads) -> float",
        &srigl_dense::dense_probe_read);
}

TORCH_LIBRARY_IMPL(srigl_dense, CPU, m) {
  m.impl("dense_pack", &srigl_dense::dense_pack);
  m.impl("dense_linear", &srigl_dense::dense_linear);
  m.impl("dense_linear_variant", &srigl_dense::dense_linear_variant);
}

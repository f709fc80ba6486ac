// The srigl::fused_* operators' C++ functions (fused_pack.cpp, fused_dispatch.cpp), registered
// with torch in fused_register.cpp.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace srigl {

// values float32 [n, k], indices int (any) [n, k] in [0, in), active int64 [n] ascending in
// [0, out), bias float32 [out] -> the packed blob (uint8). lanes 0 skips the permute pack;
// windows: the permute pack's windows (0 whichever layout has fewer steps, 1 block-aligned,
// 2 sliding).
at::Tensor fused_pack(const at::Tensor& values, const at::Tensor& indices,
                      const at::Tensor& active, const at::Tensor& bias, int64_t in_features,
                      int64_t lanes, int64_t block, int64_t windows);
std::vector<int64_t> fused_pack_info(const at::Tensor& blob);

// x float32 [..., in] (or, transposed, [in, B]) -> y [..., out] (or [out, B]).
at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& blob, const at::Tensor& table,
                        int64_t out_features, bool transposed);
at::Tensor fused_linear_variant(const at::Tensor& x, const at::Tensor& blob, int64_t variant,
                                int64_t out_features, bool transposed);
// fused_linear (variant -1: the tuned one) then y = relu(y + residual) as y is written
// (residual: y's shape, or none; relu optional): a 1x1 conv's ReLU and skip add.
at::Tensor fused_linear_epilogue(const at::Tensor& x, const at::Tensor& blob,
                                 const at::Tensor& table, int64_t variant, int64_t out_features,
                                 bool transposed, const c10::optional<at::Tensor>& residual,
                                 bool relu);
// grad_y float32 [..., out] (or [out, B]) -> grad_x [..., in] (or [in, B]).
at::Tensor fused_linear_backward(const at::Tensor& grad, const at::Tensor& blob,
                                 int64_t in_features, bool transposed);
// fused_linear `calls` times in a C++ loop (timing against a C probe); the last output.
at::Tensor fused_linear_repeat(const at::Tensor& x, const at::Tensor& blob,
                               const at::Tensor& table, int64_t out_features, bool transposed,
                               int64_t calls);
int64_t fused_resolve(const at::Tensor& blob, const at::Tensor& table, int64_t batch,
                      int64_t threads);
int64_t fused_runs_here(const at::Tensor& blob, int64_t variant);
int64_t fused_isa();
int64_t fused_detected_isa();
int64_t fused_cap_isa(int64_t cap);

}  // namespace srigl

// The epilogue of a kernel's output run: dst[i] = src[i] + bias (+ res[i]), then ReLU, as the
// output is written (a ResNet block's ReLU and skip add after a conv or a 1x1 conv as a linear
// layer). One copy for the direct conv (conv_impl.h, per ISA) and the fused linear
// (fused_dispatch.cpp). Plain C++; the functions have internal linkage (static), so each
// translation unit keeps the copy compiled with its own ISA flags.
#pragma once
#include <stdint.h>

namespace srigl_epilogue {

// dst and src may be the same array (an in-place epilogue); res may be null when !RES.
// ReLU keeps NaN (the comparison is false) and torch.relu's value everywhere else.
template <bool RES, bool RELU>
static inline void store(float* dst, const float* src, float bias, const float* res, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float v = src[i] + bias;
    if (RES) v += res[i];
    if (RELU) v = v < 0.0f ? 0.0f : v;
    dst[i] = v;
  }
}

// store<RES, RELU> picked at run time: with res when it is not null.
template <bool RELU>
static inline void store_maybe_res(float* dst, const float* src, float bias, const float* res,
                                   int64_t n) {
  if (res)
    store<true, RELU>(dst, src, bias, res, n);
  else
    store<false, RELU>(dst, src, bias, nullptr, n);
}

}  // namespace srigl_epilogue

// Interface between the direct condensed-conv driver (conv_op.cpp) and its per-ISA
// micro-kernels (conv_generic.cpp, conv_avx2.cpp, conv_avx512.cpp, all from conv_impl.h).
// Plain C++: the ISA translation units include no torch or standard-library headers, so
// nothing compiled for AVX-512 can be picked by the linker for code that runs elsewhere.
#pragma once
#include <stdint.h>

namespace srigl_conv {

// One direct condensed convolution (see conv_impl.h for the method).
//   out[img, active[j], oy, ox] = epilogue(bias[active[j]]
//       + sum_t values[j, t] * src[img * img_stride + offs[j, t] + oy * Wq + ox])
// where the epilogue adds residual[img, active[j], oy, ox] (when residual is not null), then
// clamps at 0 (when relu): a ReLU and a residual add after the conv cost no extra pass.
// Work item w = (img * ntiles + tile) * nblocks + block: TILE grid positions of `block`'s
// output channels (the variant fixes TILE and the channels per block).
struct ConvTask {
  const float* src;
  int64_t img_stride;
  const int32_t* offs;    // [n, k]
  const float* values;    // [n, k]
  const int64_t* active;  // [n]
  const float* bias;      // [out_ch]
  float* out;             // [N, out_ch, Ho, Wo]
  const float* residual;  // [N, out_ch, Ho, Wo] added before the ReLU, or null
  bool relu;              // clamp the result at 0
  int64_t out_ch, n, k, Ho, Wo, Wq;
  int64_t L;              // (Ho - 1) * Wq + Wo grid positions
  int64_t ntiles, nblocks;
  int64_t full_end;       // full vector tiles may read up to this grid position (+ TILE)
};

struct ConvTable {
  const char* name;
  int nvariants;
  int64_t (*tile)(int variant);   // grid positions per tile
  int64_t (*block)(int variant);  // output channels per tile
  void (*run)(const ConvTask& task, int variant, int64_t w0, int64_t w1);
};

extern const ConvTable kConvGeneric;
extern const ConvTable kConvAvx2;
extern const ConvTable kConvAvx512;

}  // namespace srigl_conv

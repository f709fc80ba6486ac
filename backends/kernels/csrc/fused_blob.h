// The packed form of a fused condensed Linear layer: one uint8 blob (a header of int64
// fields, then the arrays at 64-byte aligned offsets), made by fused_pack (fused_pack.cpp) and
// read by the drivers (fused_dispatch.cpp) through view_of.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

#include "fused_kernels.h"

namespace srigl {

constexpr int64_t kMagic = 0x31534655464c5253LL;  // "SRLFUFS1"
constexpr int64_t kVersion = 6;  // 5: sliding windows (blocks: offsets); 6: no per-step offsets
// inputs per chunk of the blocked tiled kernel: a chunk of a 32-column tile is 16 KiB (L1)
constexpr int64_t kKbChunk = 128;

enum Hdr {
  H_MAGIC, H_VERSION, H_IN, H_OUT, H_N, H_K, H_IDXB, H_ALL, H_LANES, H_BLOCK, H_NGROUPS,
  H_NBLOCKS, H_NSTEPS, O_BIAS, O_ACTIVE, O_VALUES, O_INDICES, O_GRPBLK, O_GRPSTEP, O_BLOCKS,
  O_PVALS, O_PIDX, H_BYTES, H_KB_CHUNK, H_KB_NCH, O_KBPTR, H_NM_N, H_NM_M, O_NMOFF, H_COUNT
};
constexpr int64_t kHeaderBytes = 64 * 4;  // 32 int64, padded
static_assert(H_COUNT * 8 <= kHeaderBytes, "header too long");

// The header of a blob made by fused_pack (checks magic, version and size).
const int64_t* header(const at::Tensor& blob);

// The blob's arrays as the micro-kernels see them.
LayerView view_of(const at::Tensor& blob);

}  // namespace srigl

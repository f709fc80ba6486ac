// Interface between the fused-linear driver (fused_dispatch.cpp) and its per-ISA micro-kernels
// (fused_generic.cpp, fused_avx2.cpp, fused_avx512.cpp, all from fused_impl.h). Plain C++:
// the ISA translation units include no torch or standard-library templates, so nothing
// compiled for AVX-512 can be picked by the linker for code that runs on other CPUs.
#pragma once
#include <stdint.h>

namespace srigl {

// A condensed layer as the kernels see it (views into the packed blob, see fused_blob.h).
//   out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]]
// Permute pack (lanes > 0): active neurons in groups of `lanes`; the padded input holds, per
// block, block - 1 consecutive inputs plus one zero slot (position block - 1). Each group lists
// its windows of `block` consecutive padded positions (blocks[2b] = the window's first padded
// position, blocks[2b+1] = its steps): block-aligned, or sliding (a window starts at the
// group's smallest input not yet taken, so it may span two blocks; fused_pack keeps whichever
// layout has fewer steps). A group's steps form one stream, window after window: step s holds,
// per lane, a kept weight (pvals) and its position in its window (pidx, a byte); idle lanes
// hold weight 0 at the window's zero slot (any W
// consecutive padded positions hold exactly one), so padding adds exactly 0 even where x is
// inf or NaN.
struct LayerView {
  int64_t in, out, n, k;
  int32_t idx_bytes;   // 2: int16 indices (in < 32768), 4: int32
  int32_t all_active;  // active == arange(out)
  const float* bias;          // [out]
  const int32_t* active;      // [n]
  const float* values;        // [n, k]
  const void* indices;        // [n, k], int16 or int32
  int32_t lanes, block;       // permute pack geometry (lanes 0: no pack)
  int64_t ngroups;
  const int32_t* grp_blk;     // [ngroups + 1]: block range of group g
  const int64_t* grp_step;    // [ngroups + 1]: step range of group g
  const int32_t* blocks;      // [nblocks, 2]: windows (first padded position, steps)
  const float* pvals;         // [nsteps, lanes]
  const uint8_t* pidx;        // [nsteps, lanes]
  // input chunks of the blocked tiled kernel (kb_chunk 0: none): neuron j keeps its weights
  // kb_ptr[j * (kb_nchunks + 1) + c] .. [.. + c + 1] in inputs [c * kb_chunk, (c + 1) * kb_chunk)
  int64_t kb_chunk, kb_nchunks;
  const int32_t* kb_ptr;      // [n, kb_nchunks + 1]
  // N:M pack (nm_m 0: none): every active neuron keeps exactly nm_n of each group of nm_m
  // consecutive inputs; its kept weight t (ascending) is input (t / nm_n) * nm_m + offset t,
  // offset t = nibble t of the neuron's row of nm_off (even t: low nibble of byte t / 2)
  int32_t nm_n, nm_m;
  const uint8_t* nm_off;      // [n, (k + 1) / 2]: two 4-bit offsets within the group per byte
};

// Output element (m, neuron column c) lives at out[m * som + c * soj].
// The width code of one-vector tiles: not a variant's width (variant codes keep 0-2), only for
// the last rows of a tiled run (fused_dispatch.cpp's plan_tiles).
constexpr int kTailWide = 3;

struct KernelTable {
  const char* name;
  // rows [m0, m1) of x (row stride ldx, unit column stride), active neurons [j0, j1)
  void (*rows)(const LayerView&, const float* x, int64_t ldx, int64_t m0, int64_t m1,
               int64_t j0, int64_t j1, float* out, int64_t som, int64_t soj);
  // the same with the permute pack, groups [g0, g1), from padded x (xp: per block of
  // block - 1 inputs, those inputs and one zero; row stride ldx)
  void (*perm)(const LayerView&, const float* xp, int64_t ldx, int64_t m0, int64_t m1,
               int64_t g0, int64_t g1, float* out, int64_t som, int64_t soj);
  int (*perm_supports)(int lanes, int block);
  // columns per tile of the tiled kernel (wide 0: 4 vector accumulators, 1: 8, 2: 2, 3: 1 (a
  // run's tail tiles only: kTailWide))
  int (*tile_width)(int wide);
  // tile [in][T] (T = tile_width(wide), zero padded) holds rows m0 .. m0+ncols-1 of x;
  // computes those rows for active neurons [j0, j1)
  void (*tiled)(const LayerView&, int wide, const float* tile, int64_t ncols, int64_t j0,
                int64_t j1, int64_t m0, float* out, int64_t som, int64_t soj);
  // the same, input chunk by input chunk (the tile's chunk stays in L1; partial sums of a
  // neuron block in an L1 buffer); needs kb_chunk > 0
  void (*tiled_blocked)(const LayerView&, int wide, const float* tile, int64_t ncols,
                        int64_t j0, int64_t j1, int64_t m0, float* out, int64_t som,
                        int64_t soj);
  // the N:M pack (needs nm_m > 0): as rows, each group's inputs read at the group's base plus
  // the 4-bit offsets
  void (*nm)(const LayerView&, const float* x, int64_t ldx, int64_t m0, int64_t m1, int64_t j0,
             int64_t j1, float* out, int64_t som, int64_t soj);
  // tile rows [i0, i1) of a [in][T] tile from x rows 0..nc-1 (row stride ldx, unit column
  // stride; nc <= T): tile[i * T + c] = x[c * ldx + i], zero for c >= nc (SIMD transposes)
  void (*pack_tile)(const float* x, int64_t ldx, int64_t nc, int64_t i0, int64_t i1,
                    float* tile, int64_t T);
};

extern const KernelTable kGeneric;
extern const KernelTable kAvx2;
extern const KernelTable kAvx512;

}  // namespace srigl

// Packing a condensed layer into one blob (srigl::fused_pack) and reading it back (header,
// view_of, srigl::fused_pack_info); the layout is in fused_blob.h.
#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "fused_blob.h"
#include "fused_ops.h"

namespace srigl {
namespace {

int64_t align64(int64_t v) { return (v + 63) & ~int64_t(63); }

// The N:M pattern of ascending rows ix [n, k] over `in` inputs: the smallest M of 2, 4, 8, 16
// (dividing in) for which every row keeps exactly N = k / (in / M) < M inputs of each group of
// M consecutive ones, i.e. its kept input t lies in group t / N; {0, 0} when there is none.
std::pair<int64_t, int64_t> nm_pattern(const int64_t* ix, int64_t n, int64_t k, int64_t in) {
  if (n == 0 || k == 0) return {0, 0};
  for (int64_t M = 2; M <= 16; M *= 2) {
    if (in % M != 0 || k % (in / M) != 0) continue;
    const int64_t N = k / (in / M);
    if (N >= M) continue;
    bool ok = true;
    for (int64_t i = 0; i < n * k && ok; ++i) ok = ix[i] / M == (i % k) / N;
    if (ok) return {N, M};
  }
  return {0, 0};
}

}  // namespace

const int64_t* header(const at::Tensor& blob) {
  TORCH_CHECK(blob.device().is_cpu() && blob.scalar_type() == at::kByte && blob.dim() == 1 &&
                  blob.is_contiguous() && blob.numel() >= kHeaderBytes,
              "srigl::fused: blob must be a contiguous uint8 CPU tensor made by fused_pack");
  const int64_t* h = reinterpret_cast<const int64_t*>(blob.data_ptr<uint8_t>());
  TORCH_CHECK(h[H_MAGIC] == kMagic && h[H_VERSION] == kVersion && h[H_BYTES] == blob.numel(),
              "srigl::fused: blob is not a packed fused layer of this version");
  return h;
}

LayerView view_of(const at::Tensor& blob) {
  const int64_t* h = header(blob);
  const uint8_t* base = blob.data_ptr<uint8_t>();
  LayerView L;
  L.in = h[H_IN];
  L.out = h[H_OUT];
  L.n = h[H_N];
  L.k = h[H_K];
  L.idx_bytes = static_cast<int32_t>(h[H_IDXB]);
  L.all_active = static_cast<int32_t>(h[H_ALL]);
  L.bias = reinterpret_cast<const float*>(base + h[O_BIAS]);
  L.active = reinterpret_cast<const int32_t*>(base + h[O_ACTIVE]);
  L.values = reinterpret_cast<const float*>(base + h[O_VALUES]);
  L.indices = base + h[O_INDICES];
  L.lanes = static_cast<int32_t>(h[H_LANES]);
  L.block = static_cast<int32_t>(h[H_BLOCK]);
  L.ngroups = h[H_NGROUPS];
  L.grp_blk = reinterpret_cast<const int32_t*>(base + h[O_GRPBLK]);
  L.grp_step = reinterpret_cast<const int64_t*>(base + h[O_GRPSTEP]);
  L.blocks = reinterpret_cast<const int32_t*>(base + h[O_BLOCKS]);
  L.pvals = reinterpret_cast<const float*>(base + h[O_PVALS]);
  L.pidx = base + h[O_PIDX];
  L.kb_chunk = h[H_KB_CHUNK];
  L.kb_nchunks = h[H_KB_NCH];
  L.kb_ptr = reinterpret_cast<const int32_t*>(base + h[O_KBPTR]);
  L.pstep_off = reinterpret_cast<const int32_t*>(base + h[O_PSTEP]);
  L.nm_n = static_cast<int32_t>(h[H_NM_N]);
  L.nm_m = static_cast<int32_t>(h[H_NM_M]);
  L.nm_off = base + h[O_NMOFF];
  return L;
}

// values float32 [n, k], indices int (any) [n, k] in [0, in), active int64 [n] ascending in
// [0, out), bias float32 [out]. lanes 0 skips the permute pack; block: inputs per block + 1.
at::Tensor fused_pack(const at::Tensor& values_, const at::Tensor& indices_,
                      const at::Tensor& active_, const at::Tensor& bias_, int64_t in_features,
                      int64_t lanes, int64_t block) {
  TORCH_CHECK(values_.dim() == 2 && indices_.sizes() == values_.sizes(),
              "fused_pack: values and indices must both be [n, k]");
  TORCH_CHECK(values_.scalar_type() == at::kFloat && bias_.scalar_type() == at::kFloat,
              "fused_pack: values and bias must be float32");
  TORCH_CHECK(values_.device().is_cpu(), "fused_pack: CPU tensors only");
  TORCH_CHECK(in_features > 0 && in_features < (int64_t(1) << 31),
              "fused_pack: in_features must be in [1, 2**31), got ", in_features);
  TORCH_CHECK(lanes == 0 || (lanes >= 1 && lanes <= 16 && block >= 2 && block <= 32),
              "fused_pack: lanes must be 0 or 1..16 and block 2..32, got ", lanes, ", ", block);
  const at::Tensor values = values_.contiguous();
  const at::Tensor idx64 = indices_.to(at::kLong).contiguous();
  const at::Tensor active = active_.to(at::kLong).contiguous();
  const at::Tensor bias = bias_.contiguous();
  const int64_t n = values.size(0), k = values.size(1), out = bias.numel(), in = in_features;
  TORCH_CHECK(active.numel() == n, "fused_pack: active must be [n] = [", n, "]");
  TORCH_CHECK(out < (int64_t(1) << 31), "fused_pack: out_features must be < 2**31");
  if (lanes > 0 && (in + block - 2) / (block - 1) * block >= (int64_t(1) << 31)) lanes = 0;
  const int64_t* ix = idx64.data_ptr<int64_t>();
  const int64_t* act = active.data_ptr<int64_t>();
  for (int64_t i = 0; i < n * k; ++i)
    TORCH_CHECK(ix[i] >= 0 && ix[i] < in, "fused_pack: index ", ix[i], " outside [0, ", in, ")");
  bool all_active = n == out;
  for (int64_t j = 0; j < n; ++j) {
    TORCH_CHECK(act[j] >= 0 && act[j] < out, "fused_pack: active neuron ", act[j],
                " outside [0, ", out, ")");
    all_active = all_active && act[j] == j;
  }
  const int idx_bytes = in < 32768 ? 2 : 4;
  if (lanes > 0 && in > (int64_t(1) << 24)) lanes = 0;  // per-block counts would not pay

  // permute pack: count kept inputs per (lane, block), S = max over lanes
  const int64_t W = block, span = block - 1;
  const int64_t ngroups = lanes > 0 ? (n + lanes - 1) / lanes : 0;
  const int64_t nb_in = lanes > 0 ? (in + span - 1) / span : 0;
  std::vector<int32_t> grp_blk(ngroups + 1, 0);
  std::vector<int64_t> grp_step(ngroups + 1, 0);
  std::vector<int32_t> blocks;
  std::vector<int32_t> cnt(lanes > 0 ? lanes * nb_in : 0), smax(nb_in), base_step(nb_in);
  for (int64_t g = 0; g < ngroups; ++g) {
    std::fill(cnt.begin(), cnt.end(), 0);
    std::fill(smax.begin(), smax.end(), 0);
    for (int64_t l = 0; l < lanes && g * lanes + l < n; ++l) {
      const int64_t* r = ix + (g * lanes + l) * k;
      for (int64_t t = 0; t < k; ++t) {
        const int64_t b = r[t] / span;
        const int32_t c = ++cnt[l * nb_in + b];
        if (c > smax[b]) smax[b] = c;
      }
    }
    int64_t steps = 0;
    for (int64_t b = 0; b < nb_in; ++b) {
      if (smax[b] == 0) continue;
      blocks.push_back(static_cast<int32_t>(b * span));
      blocks.push_back(smax[b]);
      steps += smax[b];
    }
    grp_blk[g + 1] = static_cast<int32_t>(blocks.size() / 2);
    grp_step[g + 1] = grp_step[g] + steps;
  }
  const int64_t nblocks = static_cast<int64_t>(blocks.size() / 2);
  const int64_t nsteps = grp_step[ngroups];

  // blocked tiled kernel: per neuron, where each input chunk's kept weights start (rows must
  // be ascending, as condensing makes them; a table too large to pay is left out)
  bool sorted = true;
  for (int64_t j = 0; j < n && sorted; ++j)
    for (int64_t t = 1; t < k; ++t)
      if (ix[j * k + t] < ix[j * k + t - 1]) {
        sorted = false;
        break;
      }
  const int64_t kb_nch = (in + kKbChunk - 1) / kKbChunk;
  const bool kb = sorted && n > 0 && k > 0 && n * (kb_nch + 1) <= (int64_t(1) << 26);
  // N:M layers: per kept weight its 4-bit offset within its group of M inputs
  const auto nm = sorted ? nm_pattern(ix, n, k, in) : std::pair<int64_t, int64_t>{0, 0};

  int64_t off = kHeaderBytes;
  auto take = [&](int64_t bytes) {
    const int64_t at = off;
    off = align64(off + bytes);
    return at;
  };
  int64_t h[H_COUNT] = {0};
  h[H_MAGIC] = kMagic;
  h[H_VERSION] = kVersion;
  h[H_IN] = in;
  h[H_OUT] = out;
  h[H_N] = n;
  h[H_K] = k;
  h[H_IDXB] = idx_bytes;
  h[H_ALL] = all_active;
  h[H_LANES] = lanes;
  h[H_BLOCK] = lanes > 0 ? block : 0;
  h[H_NGROUPS] = ngroups;
  h[H_NBLOCKS] = nblocks;
  h[H_NSTEPS] = nsteps;
  h[O_BIAS] = take(out * 4);
  h[O_ACTIVE] = take(n * 4);
  h[O_VALUES] = take(n * k * 4);
  h[O_INDICES] = take(n * k * idx_bytes);
  h[O_GRPBLK] = take((ngroups + 1) * 4);
  h[O_GRPSTEP] = take((ngroups + 1) * 8);
  h[O_BLOCKS] = take(nblocks * 8);
  h[O_PVALS] = take(nsteps * lanes * 4);
  h[O_PIDX] = take(nsteps * lanes);
  h[H_KB_CHUNK] = kb ? kKbChunk : 0;
  h[H_KB_NCH] = kb ? kb_nch : 0;
  h[O_KBPTR] = take(kb ? n * (kb_nch + 1) * 4 : 0);
  h[O_PSTEP] = take(nsteps * 4);
  h[H_NM_N] = nm.first;
  h[H_NM_M] = nm.second;
  const int64_t nm_row = (k + 1) / 2;  // two 4-bit offsets per byte (M <= 16)
  h[O_NMOFF] = take(nm.second ? n * nm_row : 0);
  h[H_BYTES] = off;

  at::Tensor blob = at::zeros({off}, at::TensorOptions().dtype(at::kByte));
  uint8_t* p = blob.data_ptr<uint8_t>();
  std::memcpy(p, h, sizeof(h));
  std::memcpy(p + h[O_BIAS], bias.data_ptr<float>(), out * 4);
  int32_t* pa = reinterpret_cast<int32_t*>(p + h[O_ACTIVE]);
  for (int64_t j = 0; j < n; ++j) pa[j] = static_cast<int32_t>(act[j]);
  std::memcpy(p + h[O_VALUES], values.data_ptr<float>(), n * k * 4);
  if (idx_bytes == 2) {
    int16_t* pi = reinterpret_cast<int16_t*>(p + h[O_INDICES]);
    for (int64_t i = 0; i < n * k; ++i) pi[i] = static_cast<int16_t>(ix[i]);
  } else {
    int32_t* pi = reinterpret_cast<int32_t*>(p + h[O_INDICES]);
    for (int64_t i = 0; i < n * k; ++i) pi[i] = static_cast<int32_t>(ix[i]);
  }
  if (kb) {
    int32_t* kp = reinterpret_cast<int32_t*>(p + h[O_KBPTR]);
    for (int64_t j = 0; j < n; ++j) {
      int32_t* row = kp + j * (kb_nch + 1);
      int64_t t = 0;
      for (int64_t c = 0; c <= kb_nch; ++c) {
        while (t < k && ix[j * k + t] < c * kKbChunk) ++t;
        row[c] = static_cast<int32_t>(t);
      }
    }
  }
  if (nm.second) {
    uint8_t* po = p + h[O_NMOFF];
    for (int64_t j = 0; j < n; ++j)
      for (int64_t t = 0; t < k; ++t) {
        const int64_t off = ix[j * k + t] - t / nm.first * nm.second;  // < M <= 16
        po[j * nm_row + t / 2] |= static_cast<uint8_t>(off << (4 * (t & 1)));
      }
  }
  if (lanes > 0) {
    std::memcpy(p + h[O_GRPBLK], grp_blk.data(), (ngroups + 1) * 4);
    std::memcpy(p + h[O_GRPSTEP], grp_step.data(), (ngroups + 1) * 8);
    if (nblocks) std::memcpy(p + h[O_BLOCKS], blocks.data(), nblocks * 8);
    float* pv = reinterpret_cast<float*>(p + h[O_PVALS]);
    uint8_t* pq = p + h[O_PIDX];
    for (int64_t s = 0; s < nsteps * lanes; ++s) pq[s] = static_cast<uint8_t>(W - 1);  // zero slot
    const float* vals = values.data_ptr<float>();
    for (int64_t g = 0; g < ngroups; ++g) {
      // step base of each block of this group, then place each kept weight at its rank
      int64_t step = grp_step[g];
      std::fill(base_step.begin(), base_step.end(), -1);
      int32_t* po = reinterpret_cast<int32_t*>(p + h[O_PSTEP]);
      for (int32_t b = grp_blk[g]; b < grp_blk[g + 1]; ++b) {
        const int64_t bi = blocks[2 * b] / span;
        base_step[bi] = static_cast<int32_t>(step - grp_step[g]);
        for (int32_t q = 0; q < blocks[2 * b + 1]; ++q) po[step + q] = static_cast<int32_t>(bi * W);
        step += blocks[2 * b + 1];
      }
      for (int64_t l = 0; l < lanes && g * lanes + l < n; ++l) {
        const int64_t j = g * lanes + l;
        std::vector<int32_t> rank_in_block;  // per block, how many of this lane's so far
        rank_in_block.assign(nb_in, 0);
        for (int64_t t = 0; t < k; ++t) {
          const int64_t b = ix[j * k + t] / span;
          const int64_t s = grp_step[g] + base_step[b] + rank_in_block[b]++;
          pv[s * lanes + l] = vals[j * k + t];
          pq[s * lanes + l] = static_cast<uint8_t>(ix[j * k + t] - b * span);
        }
      }
    }
  }
  return blob;
}

std::vector<int64_t> fused_pack_info(const at::Tensor& blob) {
  const int64_t* h = header(blob);
  return {h[H_IN], h[H_OUT], h[H_N], h[H_K], h[H_IDXB], h[H_ALL], h[H_LANES], h[H_BLOCK],
          h[H_NGROUPS], h[H_NBLOCKS], h[H_NSTEPS], h[H_BYTES], h[H_KB_CHUNK], h[H_NM_N],
          h[H_NM_M]};
}

}  // namespace srigl

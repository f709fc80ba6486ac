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

// The permute pack of ngroups groups of `lanes` neurons (see LayerView): per step and lane a
// weight and its position in the step's window; per window its offset and step count.
struct PermPack {
  std::vector<int32_t> grp_blk, blocks;  // windows: (first padded position, steps)
  std::vector<int64_t> grp_step;
  std::vector<float> vals;
  std::vector<uint8_t> pos;
};

// Neuron j's kept inputs as (padded position, t), ascending: input i sits at (i / span) * W +
// i % span of the padded x (per block of W = span + 1: span inputs, then a zero slot).
void lane_positions(const int64_t* ix, int64_t j, int64_t k, int64_t span,
                    std::vector<std::pair<int64_t, int64_t>>* out) {
  out->clear();
  for (int64_t t = 0; t < k; ++t) {
    const int64_t i = ix[j * k + t];
    out->emplace_back(i / span * (span + 1) + i % span, t);
  }
  std::sort(out->begin(), out->end());
}

// Windows at fixed block boundaries (the block's inputs, S = the most any lane keeps there)
// when `slide` is false; else each window starts at the smallest position not yet taken by any
// lane of the group and stays while at least min(lanes / 2, lanes left) lanes still have a
// kept input in it, so a window spans two blocks where the group's inputs do (fewer idle lanes,
// fewer steps). A window of W consecutive padded positions holds exactly one zero slot: idle
// lanes point there with weight 0.
PermPack perm_pack(const int64_t* ix, const float* vals, int64_t n, int64_t k, int64_t in,
                   int64_t lanes, int64_t W, bool slide) {
  PermPack P;
  const int64_t span = W - 1, nb = (in + span - 1) / span, padded = nb * W;
  const int64_t ngroups = (n + lanes - 1) / lanes;
  P.grp_blk.assign(ngroups + 1, 0);
  P.grp_step.assign(ngroups + 1, 0);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> lane(lanes);
  std::vector<size_t> at(lanes);
  for (int64_t g = 0; g < ngroups; ++g) {
    const int64_t used = std::min(lanes, n - g * lanes);
    for (int64_t l = 0; l < lanes; ++l) {
      if (l < used)
        lane_positions(ix, g * lanes + l, k, span, &lane[l]);
      else
        lane[l].clear();
      at[l] = 0;
    }
    auto left = [&](int64_t l) { return at[l] < lane[l].size(); };
    auto in_window = [&](int64_t l, int64_t o) { return left(l) && lane[l][at[l]].first < o + W; };
    P.grp_step[g + 1] = P.grp_step[g];
    for (;;) {
      int64_t o = padded, pending = 0;
      for (int64_t l = 0; l < lanes; ++l)
        if (left(l)) {
          o = std::min(o, lane[l][at[l]].first);
          ++pending;
        }
      if (pending == 0) break;
      o = slide ? std::min(o, padded - W) : o / W * W;
      const uint8_t zero = static_cast<uint8_t>(W - 1 - o % W);
      int64_t steps = 0, busy;
      do {
        for (int64_t l = 0; l < lanes; ++l) {
          if (in_window(l, o)) {
            const auto [p, t] = lane[l][at[l]++];
            P.vals.push_back(vals[(g * lanes + l) * k + t]);
            P.pos.push_back(static_cast<uint8_t>(p - o));
          } else {
            P.vals.push_back(0.0f);
            P.pos.push_back(zero);
          }
        }
        ++steps;
        busy = pending = 0;
        for (int64_t l = 0; l < lanes; ++l) {
          busy += in_window(l, o);
          pending += left(l);
        }
      } while (busy > 0 && (!slide || busy >= std::min(std::max<int64_t>(lanes / 2, 1), pending)));
      P.blocks.push_back(static_cast<int32_t>(o));
      P.blocks.push_back(static_cast<int32_t>(steps));
      P.grp_step[g + 1] += steps;
    }
    P.grp_blk[g + 1] = static_cast<int32_t>(P.blocks.size() / 2);
  }
  return P;
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
  L.nm_n = static_cast<int32_t>(h[H_NM_N]);
  L.nm_m = static_cast<int32_t>(h[H_NM_M]);
  L.nm_off = base + h[O_NMOFF];
  return L;
}

// values float32 [n, k], indices int (any) [n, k] in [0, in), active int64 [n] ascending in
// [0, out), bias float32 [out]. lanes 0 skips the permute pack; block: inputs per block + 1;
// windows: 0 the layout with fewer steps, 1 block-aligned windows, 2 sliding windows.
at::Tensor fused_pack(const at::Tensor& values_, const at::Tensor& indices_,
                      const at::Tensor& active_, const at::Tensor& bias_, int64_t in_features,
                      int64_t lanes, int64_t block, int64_t windows) {
  TORCH_CHECK(values_.dim() == 2 && indices_.sizes() == values_.sizes(),
              "fused_pack: values and indices must both be [n, k]");
  TORCH_CHECK(values_.scalar_type() == at::kFloat && bias_.scalar_type() == at::kFloat,
              "fused_pack: values and bias must be float32");
  TORCH_CHECK(values_.device().is_cpu(), "fused_pack: CPU tensors only");
  TORCH_CHECK(in_features > 0 && in_features < (int64_t(1) << 31),
              "fused_pack: in_features must be in [1, 2**31), got ", in_features);
  TORCH_CHECK(lanes == 0 || (lanes >= 1 && lanes <= 16 && block >= 2 && block <= 32),
              "fused_pack: lanes must be 0 or 1..16 and block 2..32, got ", lanes, ", ", block);
  TORCH_CHECK(windows >= 0 && windows <= 2,
              "fused_pack: windows must be 0 (fewer steps), 1 (aligned) or 2 (sliding), got ",
              windows);
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

  // permute pack: the block-aligned or the sliding-window layout (windows 0: whichever has
  // fewer steps; the tuner times both, as fewer steps is not always faster: at 99% the aligned
  // layout has more steps and fewer windows, and ran 15-20% faster on one core of a Zen 5)
  const int64_t W = block;
  const int64_t ngroups = lanes > 0 ? (n + lanes - 1) / lanes : 0;
  PermPack pack;
  if (lanes > 0) {
    const float* vals = values.data_ptr<float>();
    if (windows != 2) pack = perm_pack(ix, vals, n, k, in, lanes, W, false);
    if (windows != 1) {
      PermPack sliding = perm_pack(ix, vals, n, k, in, lanes, W, true);
      if (windows == 2 || sliding.grp_step.back() < pack.grp_step.back())
        pack = std::move(sliding);
    }
  }
  const int64_t nblocks = static_cast<int64_t>(pack.blocks.size() / 2);
  const int64_t nsteps = lanes > 0 ? pack.grp_step.back() : 0;

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
    std::memcpy(p + h[O_GRPBLK], pack.grp_blk.data(), (ngroups + 1) * 4);
    std::memcpy(p + h[O_GRPSTEP], pack.grp_step.data(), (ngroups + 1) * 8);
    if (nblocks) std::memcpy(p + h[O_BLOCKS], pack.blocks.data(), nblocks * 8);
    if (nsteps) {
      std::memcpy(p + h[O_PVALS], pack.vals.data(), nsteps * lanes * 4);
      std::memcpy(p + h[O_PIDX], pack.pos.data(), nsteps * lanes);
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

// srigl::fused_* operators: packing a condensed layer into one blob, choosing a micro-kernel
// variant (per batch bucket and thread count, from a table the autotuner fills) and running
// it serially or with OpenMP (torch's own libgomp pool: same thread count as torch).
//
// Variant code: isa * 1000 + family * 100 + wide * 10 + parallel
//   isa 0 generic, 1 avx2, 2 avx512; family 0 rows, 1 perm, 2 tiled, 3 tiled in input chunks
//   (blocked); wide: tiled with twice the accumulators. Table: int32 [kThreadSlots, kBuckets]; entry -1 = the static rule.
#include <ATen/ATen.h>
#include <omp.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cpu_isa.h"
#include "fused_kernels.h"

namespace srigl {
namespace {

constexpr int64_t kMagic = 0x31534655464c5253LL;  // "SRLFUFS1"
constexpr int64_t kVersion = 3;
// inputs per chunk of the blocked tiled kernel: a chunk of a 32-column tile is 16 KiB (L1)
constexpr int64_t kKbChunk = 128;
constexpr int kThreadSlots = 64;
constexpr int kBuckets = 11;

enum Hdr {
  H_MAGIC, H_VERSION, H_IN, H_OUT, H_N, H_K, H_IDXB, H_ALL, H_LANES, H_BLOCK, H_NGROUPS,
  H_NBLOCKS, H_NSTEPS, O_BIAS, O_ACTIVE, O_VALUES, O_INDICES, O_GRPBLK, O_GRPSTEP, O_BLOCKS,
  O_PVALS, O_PIDX, H_BYTES, H_KB_CHUNK, H_KB_NCH, O_KBPTR, O_PSTEP, H_COUNT
};
constexpr int64_t kHeaderBytes = 64 * 4;  // 32 int64, padded
static_assert(H_COUNT * 8 <= kHeaderBytes, "header too long");

int64_t align64(int64_t v) { return (v + 63) & ~int64_t(63); }

// ------------------------------------------------------------------ CPU features
std::atomic<int> g_isa_cap{2};  // lowered by fused_cap_isa (a failed self-check)

int cpu_isa() {
  return std::min(srigl_isa::detected_isa(), g_isa_cap.load(std::memory_order_relaxed));
}

const KernelTable& table_for(int isa) {
  return isa >= 2 ? kAvx512 : isa == 1 ? kAvx2 : kGeneric;
}

// ------------------------------------------------------------------ blob
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

// ------------------------------------------------------------------ variants
int bucket_of(int64_t m) {
  int b = 0;
  while (b < kBuckets - 1 && (int64_t(1) << b) < m) ++b;
  return b;
}

struct Variant {
  int isa, family, wide, par;
};

Variant decode(int64_t code) {
  return {static_cast<int>(code / 1000), static_cast<int>(code / 100 % 10),
          static_cast<int>(code / 10 % 10), static_cast<int>(code % 10)};
}

int64_t encode(const Variant& v) { return v.isa * 1000 + v.family * 100 + v.wide * 10 + v.par; }

bool runs_here(const Variant& v, const LayerView& L) {
  if (v.isa < 0 || v.isa > cpu_isa() || v.family < 0 || v.family > 3 || v.wide < 0 ||
      v.wide > 1 || v.par < 0 || v.par > 1)
    return false;
  if (v.family == 1) return L.lanes > 0 && table_for(v.isa).perm_supports(L.lanes, L.block);
  if (v.family == 3) return L.kb_chunk > 0;
  return true;
}

// The documented static rule (SRIGL_TUNE=off, or an untuned entry): the best ISA here; up to
// 8 rows the permute pack if this ISA runs it (else the gather rows kernel), above that the
// tiled kernel (input-chunk blocked where the pack has chunks); parallel whenever torch has
// more than one thread.
Variant static_rule(const LayerView& L, int64_t m, int threads) {
  Variant v{cpu_isa(), L.kb_chunk > 0 ? 3 : 2, 0, threads > 1 ? 1 : 0};
  if (m <= 8) {
    v.family = (L.lanes > 0 && table_for(v.isa).perm_supports(L.lanes, L.block)) ? 1 : 0;
    if (v.family == 1 && v.isa == 0) v.family = 0;  // the scalar emulation is for tests
  }
  return v;
}

Variant resolve(const LayerView& L, const at::Tensor& table, int64_t m, int threads) {
  if (table.defined() && table.numel() == kThreadSlots * kBuckets) {
    TORCH_CHECK(table.scalar_type() == at::kInt && table.is_contiguous() && table.is_cpu(),
                "srigl::fused: variant table must be a contiguous int32 CPU tensor");
    const int slot = (threads < 1 ? 1 : threads > kThreadSlots ? kThreadSlots : threads) - 1;
    const int32_t code = table.data_ptr<int32_t>()[slot * kBuckets + bucket_of(m)];
    if (code >= 0) {
      const Variant v = decode(code);
      if (runs_here(v, L)) return v;
    }
  } else {
    TORCH_CHECK(!table.defined() || table.numel() == 0,
                "srigl::fused: variant table must be int32 [", kThreadSlots, ", ", kBuckets, "]");
  }
  return static_rule(L, m, threads);
}

// ------------------------------------------------------------------ drivers
void split(int64_t total, int parts, int part, int64_t* lo, int64_t* hi) {
  const int64_t q = total / parts, r = total % parts;
  *lo = part * q + (part < r ? part : r);
  *hi = *lo + q + (part < r ? 1 : 0);
}

void fill_bias(const LayerView& L, int64_t m, float* out, int64_t som, int64_t soj) {
  if (L.all_active) return;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < L.out; ++c) out[r * som + c * soj] = L.bias[c];
}

// x rows -> per input block of block - 1 inputs: those inputs, then a zero (the permute
// kernels' layout); returns the row stride of the padded copy (a thread-local buffer).
const float* pad_blocks(const LayerView& L, const float* x, int64_t ldx, int64_t m,
                        int64_t* ldp) {
  static thread_local std::vector<float> buf;
  const int64_t W = L.block, span = W - 1, nb = (L.in + span - 1) / span;
  *ldp = nb * W;
  const size_t need = static_cast<size_t>(m * nb * W);
  if (buf.size() < need) buf.resize(need);
  for (int64_t r = 0; r < m; ++r) {
    const float* src = x + r * ldx;
    float* dst = buf.data() + r * nb * W;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t valid = std::min(span, L.in - b * span);
      std::memcpy(dst + b * W, src + b * span, valid * sizeof(float));
      for (int64_t i = valid; i < W; ++i) dst[b * W + i] = 0.0f;
    }
  }
  return buf.data();
}

void run_rows_or_perm(const Variant& v, const LayerView& L, const float* x, int64_t ldx,
                      int64_t m, float* out, int64_t som, int64_t soj) {
  const KernelTable& kt = table_for(v.isa);
  const bool perm = v.family == 1;
  const int64_t units = perm ? L.ngroups : L.n;
  if (perm) x = pad_blocks(L, x, ldx, m, &ldx);
  if (!v.par || units <= 1 || omp_get_max_threads() <= 1) {  // no team at all: no OpenMP cost
    if (perm)
      kt.perm(L, x, ldx, 0, m, 0, units, out, som, soj);
    else
      kt.rows(L, x, ldx, 0, m, 0, units, out, som, soj);
    return;
  }
#pragma omp parallel
  {
    int64_t lo, hi;
    split(units, omp_get_num_threads(), omp_get_thread_num(), &lo, &hi);
    if (lo < hi) {
      if (perm)
        kt.perm(L, x, ldx, 0, m, lo, hi, out, som, soj);
      else
        kt.rows(L, x, ldx, 0, m, lo, hi, out, som, soj);
    }
  }
}

// x rows (unit column stride, row stride ldx) or, if x_transposed, xt [in, M] (row stride
// ldx) -> zero-padded [in][T] tiles, then (tile, neuron block) work items.
void run_tiled(const Variant& v, const LayerView& L, const float* x, int64_t ldx,
               bool x_transposed, int64_t m, float* out, int64_t som, int64_t soj) {
  const KernelTable& kt = table_for(v.isa);
  const int64_t T = kt.tile_width(v.wide), in = L.in;
  const int64_t ntiles = (m + T - 1) / T;
  static thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(ntiles * in * T);
  if (buf.size() < need) buf.resize(need);
  float* tiles = buf.data();
  constexpr int64_t IB = 16;  // inputs per transpose block
  const int64_t nib = (in + IB - 1) / IB;
  const int64_t njb = (L.n + 63) / 64;  // neuron chunks per tile (64 neurons each)
  const bool par = v.par != 0;
#pragma omp parallel if (par && ntiles * njb > 1)
  {
    const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
    int64_t lo, hi;
    split(ntiles * nib, nt, tid, &lo, &hi);
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t tix = item / nib, i0 = (item % nib) * IB, i1 = std::min(i0 + IB, in);
      const int64_t m0 = tix * T, nc = std::min(T, m - m0);
      float* tile = tiles + tix * in * T;
      if (x_transposed) {
        for (int64_t i = i0; i < i1; ++i) {
          std::memcpy(tile + i * T, x + i * ldx + m0, nc * sizeof(float));
          if (nc < T) std::memset(tile + i * T + nc, 0, (T - nc) * sizeof(float));
        }
      } else {
        for (int64_t c = 0; c < T; ++c) {
          if (c < nc) {
            const float* src = x + (m0 + c) * ldx;
            for (int64_t i = i0; i < i1; ++i) tile[i * T + c] = src[i];
          } else {
            for (int64_t i = i0; i < i1; ++i) tile[i * T + c] = 0.0f;
          }
        }
      }
    }
#pragma omp barrier
    split(ntiles * njb, nt, tid, &lo, &hi);
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t tix = item / njb, j0 = (item % njb) * 64, j1 = std::min(j0 + 64, L.n);
      const int64_t m0 = tix * T, nc = std::min(T, m - m0);
      if (v.family == 3)
        kt.tiled_blocked(L, v.wide, tiles + tix * in * T, nc, j0, j1, m0, out, som, soj);
      else
        kt.tiled(L, v.wide, tiles + tix * in * T, nc, j0, j1, m0, out, som, soj);
    }
  }
}

at::Tensor run(const at::Tensor& x, const at::Tensor& blob, const Variant* forced,
               const at::Tensor& table, int64_t out_features, bool transposed) {
  const LayerView L = view_of(blob);
  TORCH_CHECK(out_features == L.out, "srigl::fused: out_features ", out_features,
              " does not match the packed layer's ", L.out);
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "srigl::fused: expected a float32 CPU input, got ", x.scalar_type(), " on ",
              x.device());
  const int threads = omp_get_max_threads();
  at::Tensor x2;
  at::Tensor y;
  int64_t m, ldx, som, soj;
  if (!transposed) {
    TORCH_CHECK(x.dim() >= 1 && x.size(-1) == L.in, "srigl::fused: expected input [..., ",
                L.in, "], got ", x.sizes());
    x2 = x.reshape({-1, L.in});
    if (x2.stride(1) != 1 || (x2.size(0) > 1 && x2.stride(0) < L.in)) x2 = x2.contiguous();
    m = x2.size(0);
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = L.out;
    y = at::empty(shape, x.options());
    ldx = x2.size(0) > 1 ? x2.stride(0) : L.in;
    som = L.out;
    soj = 1;
  } else {
    TORCH_CHECK(x.dim() == 2 && x.size(0) == L.in, "srigl::fused: expected transposed input [",
                L.in, ", B], got ", x.sizes());
    m = x.size(1);
    y = at::empty({L.out, m}, x.options());
    som = 1;
    soj = m;
  }
  if (m == 0) return y;
  float* out = y.data_ptr<float>();
  Variant v = forced ? *forced : resolve(L, table, m, threads);
  if (forced) {
    TORCH_CHECK(runs_here(v, L), "srigl::fused: variant ", encode(v),
                " cannot run here (CPU ISA level ", cpu_isa(), ", pack lanes ", L.lanes,
                " block ", L.block, ")");
  }
  fill_bias(L, m, out, som, soj);
  if (L.n == 0) return y;
  if (v.family >= 2) {
    if (transposed) {
      x2 = x.stride(1) == 1 ? x : x.contiguous();
      run_tiled(v, L, x2.data_ptr<float>(), x2.stride(0), true, m, out, som, soj);
    } else {
      run_tiled(v, L, x2.data_ptr<float>(), ldx, false, m, out, som, soj);
    }
    return y;
  }
  if (transposed) {
    x2 = x.t().contiguous();  // a few batch columns: rows of x
    ldx = L.in;
  }
  run_rows_or_perm(v, L, x2.data_ptr<float>(), ldx, m, out, som, soj);
  return y;
}

at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& blob, const at::Tensor& table,
                        int64_t out_features, bool transposed) {
  return run(x, blob, nullptr, table, out_features, transposed);
}

at::Tensor fused_linear_variant(const at::Tensor& x, const at::Tensor& blob, int64_t variant,
                                int64_t out_features, bool transposed) {
  const Variant v = decode(variant);
  return run(x, blob, &v, at::Tensor(), out_features, transposed);
}

int64_t fused_resolve(const at::Tensor& blob, const at::Tensor& table, int64_t batch,
                      int64_t threads) {
  const LayerView L = view_of(blob);
  return encode(resolve(L, table, batch < 1 ? 1 : batch, static_cast<int>(threads)));
}

int64_t fused_runs_here(const at::Tensor& blob, int64_t variant) {
  return runs_here(decode(variant), view_of(blob)) ? 1 : 0;
}

int64_t fused_isa() { return cpu_isa(); }

int64_t fused_detected_isa() { return srigl_isa::detected_isa(); }

// Never run ISA levels above `cap` in this process (0 generic, 1 avx2, 2 avx512).
int64_t fused_cap_isa(int64_t cap) {
  g_isa_cap.store(static_cast<int>(cap < 0 ? 0 : cap > 2 ? 2 : cap));
  return cpu_isa();
}

std::vector<int64_t> fused_pack_info(const at::Tensor& blob) {
  const int64_t* h = header(blob);
  return {h[H_IN], h[H_OUT], h[H_N], h[H_K], h[H_IDXB], h[H_ALL], h[H_LANES], h[H_BLOCK],
          h[H_NGROUPS], h[H_NBLOCKS], h[H_NSTEPS], h[H_BYTES], h[H_KB_CHUNK]};
}

}  // namespace
}  // namespace srigl

TORCH_LIBRARY(srigl, m) {
  m.def("fused_linear(Tensor x, Tensor blob, Tensor table, int out_features, bool transposed) "
        "-> Tensor");
  m.def("fused_linear_variant(Tensor x, Tensor blob, int variant, int out_features, "
        "bool transposed) -> Tensor");
  m.def("fused_pack(Tensor values, Tensor indices, Tensor active, Tensor bias, int in_features, "
        "int lanes, int block) -> Tensor");
  m.def("fused_resolve(Tensor blob, Tensor table, int batch, int threads) -> int",
        &srigl::fused_resolve);
  m.def("fused_runs_here(Tensor blob, int variant) -> int", &srigl::fused_runs_here);
  m.def("fused_pack_info(Tensor blob) -> int[]", &srigl::fused_pack_info);
  m.def("fused_isa() -> int", &srigl::fused_isa);
  m.def("fused_detected_isa() -> int", &srigl::fused_detected_isa);
  m.def("fused_cap_isa(int cap) -> int", &srigl::fused_cap_isa);
}

TORCH_LIBRARY_IMPL(srigl, CPU, m) {
  m.impl("fused_linear", &srigl::fused_linear);
  m.impl("fused_linear_variant", &srigl::fused_linear_variant);
  m.impl("fused_pack", &srigl::fused_pack);
}

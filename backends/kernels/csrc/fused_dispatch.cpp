// Running a packed fused layer: which micro-kernel variant runs (per batch bucket and thread
// count, from the table the autotuner fills; else the static rule), and the drivers that run
// it serially or on the extension's work-claiming pool (work_pool.h: same thread count as
// torch; the caller never waits for a helper that has not started).
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu_isa.h"
#include "epilogue.h"
#include "fused_blob.h"
#include "fused_kernels.h"
#include "fused_ops.h"
#include "fused_variant.h"
#include "work_pool.h"

namespace srigl {
namespace {

// ------------------------------------------------------------------ CPU features
srigl_isa::IsaCap g_isa;  // lowered by fused_cap_isa (a failed self-check)

int cpu_isa() { return g_isa.level(); }

const srigl_isa::PerIsa<KernelTable> kTables{kGeneric, kAvx2, kAvx512};


// ------------------------------------------------------------------ variants
constexpr int kNm = 4;  // the N:M family (fused_variant.h)

int bucket_of(int64_t m) {
  int b = 0;
  while (b < kBuckets - 1 && (int64_t(1) << b) < m) ++b;
  return b;
}


bool runs_here(const Variant& v, const LayerView& L) {
  if (v.isa < 0 || v.isa > cpu_isa() || v.family < 0 || v.family > kNm || v.wide < 0 ||
      v.wide > 2 || v.par < 0 || v.par > 1)
    return false;
  if (v.wide != 0 && v.family < 2) return false;  // a width is a tiled kernel's
  if (v.family == 1) return L.lanes > 0 && kTables.at(v.isa).perm_supports(L.lanes, L.block);
  if (v.family == 3) return L.kb_chunk > 0;
  if (v.family == kNm) return L.nm_m > 0 && v.wide == 0;  // only layers packed as N:M
  return true;
}

// The documented static rule (SRIGL_TUNE=off, or an untuned entry): the best ISA here; up to
// 8 rows the permute pack if this ISA runs it (else the gather rows kernel), above that the
// tiled kernel (input-chunk blocked where the pack has chunks); parallel whenever torch has
// more than one thread.
Variant static_rule(const LayerView& L, int64_t m, int threads) {
  Variant v{cpu_isa(), L.kb_chunk > 0 ? 3 : 2, 0, threads > 1 ? 1 : 0};
  if (m <= 8) {
    v.family = (L.lanes > 0 && kTables.at(v.isa).perm_supports(L.lanes, L.block)) ? 1 : 0;
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
void fill_bias(const LayerView& L, int64_t m, float* out, int64_t som, int64_t soj) {
  if (L.all_active) return;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < L.out; ++c) out[r * som + c * soj] = L.bias[c];
}

// x rows -> per input block of block - 1 inputs: those inputs, then a zero (the permute
// kernels' layout), in the calling thread's own buffer; returns it and its row stride (*ldp).
// `call` numbers the layer call: a thread pads once per call, at its first chunk, so every
// thread of a parallel call reads a copy in its own cache (one copy made by the caller and read
// by a helper moved 12 KB between the cores per call: the helper waited for it longer than its
// chunks ran at 99% sparsity, and the parallel permute kernel came out slower than the serial
// one).
const float* pad_blocks(const LayerView& L, const float* x, int64_t ldx, int64_t m,
                        uint64_t call, int64_t* ldp) {
  struct Padded {
    std::vector<float> buf;
    uint64_t call = 0;  // the call buf holds (0: none)
  };
  static thread_local Padded mine;
  const int64_t W = L.block, span = W - 1, nb = (L.in + span - 1) / span;
  *ldp = nb * W;
  // 64-byte aligned: a window at a multiple of the block then loads whole cache lines
  auto aligned = [&] {
    const uintptr_t a = reinterpret_cast<uintptr_t>(mine.buf.data());
    return mine.buf.data() + ((64 - a % 64) % 64) / sizeof(float);
  };
  if (mine.call == call) return aligned();
  const size_t need = static_cast<size_t>(m * nb * W) + 64 / sizeof(float);
  if (mine.buf.size() < need) mine.buf.resize(need);
  float* const base = aligned();
  for (int64_t r = 0; r < m; ++r) {
    const float* src = x + r * ldx;
    float* dst = base + r * nb * W;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t valid = std::min(span, L.in - b * span);
      std::memcpy(dst + b * W, src + b * span, valid * sizeof(float));
      for (int64_t i = valid; i < W; ++i) dst[b * W + i] = 0.0f;
    }
  }
  mine.call = call;
  return base;
}

std::atomic<uint64_t> g_calls{0};  // numbers the permute calls (pad_blocks)

void run_rows_or_perm(const Variant& v, const LayerView& L, const float* x, int64_t ldx,
                      int64_t m, float* out, int64_t som, int64_t soj) {
  const KernelTable& kt = kTables.at(v.isa);
  const bool perm = v.family == 1;
  const int64_t units = perm ? L.ngroups : L.n;
  const uint64_t call = perm ? g_calls.fetch_add(1, std::memory_order_relaxed) + 1 : 0;
  auto part = [&](int64_t lo, int64_t hi) {
    if (perm) {
      int64_t ldp;
      const float* xp = pad_blocks(L, x, ldx, m, call, &ldp);
      kt.perm(L, xp, ldp, 0, m, lo, hi, out, som, soj);
    } else if (v.family == kNm) {
      kt.nm(L, x, ldx, 0, m, lo, hi, out, som, soj);
    } else {
      kt.rows(L, x, ldx, 0, m, lo, hi, out, som, soj);
    }
  };
  srigl_pool::parallel_ranges(units, v.par != 0, part);
}

// Inputs [i0, i1) of x rows m0 .. m0 + nc - 1 (or, if x_transposed, of xt [in, M], row stride
// ldx) -> rows i0 .. i1 - 1 of the zero-padded tile [in][T].
void fill_tile(const KernelTable& kt, const float* x, int64_t ldx, bool x_transposed, int64_t m0,
               int64_t nc, int64_t T, int64_t i0, int64_t i1, float* tile) {
  if (x_transposed) {
    for (int64_t i = i0; i < i1; ++i) {
      std::memcpy(tile + i * T, x + i * ldx + m0, nc * sizeof(float));
      if (nc < T) std::memset(tile + i * T + nc, 0, (T - nc) * sizeof(float));
    }
    return;
  }
  kt.pack_tile(x + m0 * ldx, ldx, nc, i0, i1, tile, T);  // SIMD transpose, zero columns >= nc
}

// One register tile of a tiled run: batch rows m0 .. m0 + nc - 1, width code `wide` (T
// columns, T >= nc), at `offset` floats into the tile buffer.
struct TilePlan {
  int64_t m0, nc, T, offset;
  int wide;
};

// m rows cut into tiles: full tiles of the variant's width, then the remainder in narrower
// tiles (down to one vector: kTailWide) that cover it with the fewest columns, then the fewest
// tiles: at m = 197 and 64-column AVX-512 tiles, 3 x 64 + 16 = 208 columns instead of
// 4 x 64 = 256 (each column costs a full tile's arithmetic, padding included). The widths are
// 1, 2, 4 and 8 vectors, so the remainder rounded up to whole vectors is covered exactly by
// taking the widest width that fits, largest first (its binary digits).
std::vector<TilePlan> plan_tiles(const KernelTable& kt, int main_wide, int64_t m, int64_t in) {
  const int64_t T = kt.tile_width(main_wide), vec = kt.tile_width(kTailWide);
  std::vector<TilePlan> plan;
  plan.reserve(static_cast<size_t>(m / T + 4));
  int64_t m0 = 0, offset = 0;
  auto add = [&](int64_t w, int code) {
    const int64_t nc = std::min(w, m - m0);
    plan.push_back({m0, nc, w, offset, code});
    m0 += nc;
    offset += in * w;
  };
  for (; m - m0 >= T;) add(T, main_wide);
  int64_t cols = (m - m0 + vec - 1) / vec * vec;  // the remainder in whole vectors (< T)
  for (int code : {1, 0, 2, kTailWide}) {  // 8, 4, 2, 1 vectors
    const int64_t w = kt.tile_width(code);
    if (w <= T && w <= cols) {
      add(w, code);
      cols -= w;
    }
  }
  return plan;
}

// What follows the product in the caller's model (a 1x1 conv in a ResNet block): y = relu(y +
// residual), res of y's shape and layout (null: no add), applied while the output is in cache.
struct Epilogue {
  const float* res = nullptr;
  bool relu = false;
  bool any() const { return res != nullptr || relu; }
};

inline void epilogue_run(const Epilogue& e, float* y, const float* r, int64_t n, int64_t stride) {
  if (stride == 1) {
    if (e.relu)
      srigl_epilogue::store_maybe_res<true>(y, y, 0.0f, r, n);
    else
      srigl_epilogue::store_maybe_res<false>(y, y, 0.0f, r, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {  // a column of a [m, out] output
    float v = y[i * stride] + (r ? r[i * stride] : 0.0f);
    if (e.relu && v < 0.0f) v = 0.0f;
    y[i * stride] = v;
  }
}

// The epilogue on output columns (neurons) active[j0 .. j1) x rows m0 .. m0 + nc.
void epilogue_block(const Epilogue& e, const LayerView& L, float* out, int64_t som, int64_t soj,
                    int64_t j0, int64_t j1, int64_t m0, int64_t nc) {
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t col = L.all_active ? j : L.active[j];
    const int64_t at = col * soj + m0 * som;
    epilogue_run(e, out + at, e.res ? e.res + at : nullptr, nc, som);
  }
}

// The epilogue on the whole output [m, out] (som = out, soj = 1) or [out, m] (som = 1).
void epilogue_all(const Epilogue& e, float* out, int64_t m, int64_t nout, int64_t som,
                  int64_t soj, bool par) {
  const int64_t rows = som == 1 ? nout : m, len = som == 1 ? m : nout;
  srigl_pool::parallel_ranges(rows, par && rows * len > 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      epilogue_run(e, out + r * len, e.res ? e.res + r * len : nullptr, len, 1);
  });
}

// x rows (unit column stride, row stride ldx) or, if x_transposed, xt [in, M] (row stride
// ldx) -> zero-padded [in][T] tiles (plan_tiles; one pool job of (tile, input block) items),
// then a second job of (tile, neuron block) items: no step waits for a thread that has not
// started.
void run_tiled(const Variant& v, const LayerView& L, const float* x, int64_t ldx,
               bool x_transposed, int64_t m, float* out, int64_t som, int64_t soj,
               const Epilogue& ep) {
  const bool ep_items = ep.any() && L.all_active;  // else the caller passes over all of y
  const KernelTable& kt = kTables.at(v.isa);
  const int64_t in = L.in;
  const std::vector<TilePlan> plan = plan_tiles(kt, v.wide, m, in);
  const int64_t ntiles = static_cast<int64_t>(plan.size());
  // 64-byte aligned (every tile's rows are whole vectors, so each row then starts a cache
  // line): from a vector's own 16-byte alignment every 64-byte load of a row spanned two cache
  // lines, and the tiled kernels ran at 0.6x (Zen 5, one core: 2.4 against 3.9-4.1 vector
  // FMAs per ns for a 64 KiB tile, the same loop and footprint)
  static thread_local std::vector<float> buf;
  const size_t need = static_cast<size_t>(plan.back().offset + in * plan.back().T) + 16;
  if (buf.size() < need) buf.resize(need);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(buf.data());
  float* tiles = buf.data() + ((64 - addr % 64) % 64) / sizeof(float);
  constexpr int64_t IB = 16;  // inputs per transpose block
  const int64_t nib = (in + IB - 1) / IB;
  const int64_t njb = (L.n + 63) / 64;  // neuron chunks per tile (64 neurons each)
  const bool par = v.par != 0 && ntiles * njb > 1;
  srigl_pool::parallel_ranges(ntiles * nib, par, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      const TilePlan& t = plan[item / nib];
      const int64_t i0 = (item % nib) * IB;
      fill_tile(kt, x, ldx, x_transposed, t.m0, t.nc, t.T, i0, std::min(i0 + IB, in),
                tiles + t.offset);
    }
  });
  srigl_pool::parallel_ranges(ntiles * njb, par, [&](int64_t lo, int64_t hi) {
    for (int64_t item = lo; item < hi; ++item) {
      const TilePlan& t = plan[item / njb];
      const int64_t j0 = (item % njb) * 64, j1 = std::min(j0 + 64, L.n);
      if (v.family == 3)
        kt.tiled_blocked(L, t.wide, tiles + t.offset, t.nc, j0, j1, t.m0, out, som, soj);
      else
        kt.tiled(L, t.wide, tiles + t.offset, t.nc, j0, j1, t.m0, out, som, soj);
      if (ep_items) epilogue_block(ep, L, out, som, soj, j0, j1, t.m0, t.nc);
    }
  });
}

at::Tensor run(const at::Tensor& x, const at::Tensor& blob, const Variant* forced,
               const at::Tensor& table, int64_t out_features, bool transposed,
               const Epilogue& ep = Epilogue()) {
  const LayerView L = view_of(blob);
  TORCH_CHECK(out_features == L.out, "srigl::fused: out_features ", out_features,
              " does not match the packed layer's ", L.out);
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat,
              "srigl::fused: expected a float32 CPU input, got ", x.scalar_type(), " on ",
              x.device());
  const int threads = srigl_pool::threads();
  at::Tensor x2;
  at::Tensor y;
  int64_t m, ldx, som, soj;
  if (!transposed) {
    TORCH_CHECK(x.dim() >= 1 && x.size(-1) == L.in, "srigl::fused: expected input [..., ",
                L.in, "], got ", x.sizes());
    // a 2-D x is used as it is (no reshaped view to make per call)
    x2 = x.dim() == 2 ? x : x.reshape({-1, L.in});
    if (x2.stride(1) != 1 || (x2.size(0) > 1 && x2.stride(0) < L.in)) x2 = x2.contiguous();
    m = x2.size(0);
    at::DimVector shape(x.sizes());  // on the stack (no heap allocation per call)
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
                " block ", L.block, ", N:M ", L.nm_n, ":", L.nm_m, ")");
  }
  fill_bias(L, m, out, som, soj);
  const bool tiled = L.n > 0 && (v.family == 2 || v.family == 3);
  if (tiled) {
    if (transposed) {
      x2 = x.stride(1) == 1 ? x : x.contiguous();
      run_tiled(v, L, x2.data_ptr<float>(), x2.stride(0), true, m, out, som, soj, ep);
    } else {
      run_tiled(v, L, x2.data_ptr<float>(), ldx, false, m, out, som, soj, ep);
    }
  } else if (L.n > 0) {
    if (transposed) {
      x2 = x.t().contiguous();  // a few batch columns: rows of x
      ldx = L.in;
    }
    run_rows_or_perm(v, L, x2.data_ptr<float>(), ldx, m, out, som, soj);
  }
  if (ep.any() && !(tiled && L.all_active))  // the tiled kernels applied it per item
    epilogue_all(ep, out, m, L.out, som, soj, v.par != 0);
  return y;
}

// grad_x[r, indices[j, t]] += grad_y[r, active[j]] * values[j, t]: the transposed condensed
// product, rows of grad_y (row stride ldg) split over threads (no two threads write a row).
void run_backward(const LayerView& L, const float* gy, int64_t ldg, int64_t m, float* gx) {
  const int16_t* i16 = static_cast<const int16_t*>(L.indices);
  const int32_t* i32 = static_cast<const int32_t*>(L.indices);
  srigl_pool::parallel_ranges(m, m * L.n * L.k > 32768, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* dst = gx + r * L.in;
      std::memset(dst, 0, L.in * sizeof(float));
      const float* g = gy + r * ldg;
      for (int64_t j = 0; j < L.n; ++j) {
        const float gj = g[L.active[j]];
        if (gj == 0.0f) continue;
        const float* vals = L.values + j * L.k;
        for (int64_t t = 0; t < L.k; ++t) {
          const int64_t c = L.idx_bytes == 2 ? i16[j * L.k + t] : i32[j * L.k + t];
          dst[c] += gj * vals[t];
        }
      }
    }
  });
}

}  // namespace

at::Tensor fused_linear(const at::Tensor& x, const at::Tensor& blob, const at::Tensor& table,
                        int64_t out_features, bool transposed) {
  return run(x, blob, nullptr, table, out_features, transposed);
}

at::Tensor fused_linear_variant(const at::Tensor& x, const at::Tensor& blob, int64_t variant,
                                int64_t out_features, bool transposed) {
  const Variant v = decode(variant);
  return run(x, blob, &v, at::Tensor(), out_features, transposed);
}

at::Tensor fused_linear_epilogue(const at::Tensor& x, const at::Tensor& blob,
                                 const at::Tensor& table, int64_t variant, int64_t out_features,
                                 bool transposed, const c10::optional<at::Tensor>& residual,
                                 bool relu) {
  Epilogue ep;
  ep.relu = relu;
  if (residual.has_value() && residual->defined()) {
    const at::Tensor& res = *residual;
    at::DimVector want(x.sizes());  // y's shape
    if (transposed && x.dim() == 2)
      want[0] = out_features;
    else if (!want.empty())
      want.back() = out_features;
    TORCH_CHECK(res.scalar_type() == at::kFloat && res.device().is_cpu() && res.is_contiguous() &&
                    res.sizes() == at::IntArrayRef(want),
                "srigl::fused_linear_epilogue: the residual must be a contiguous float32 CPU "
                "tensor of the output's shape ", at::IntArrayRef(want), ", got ", res.sizes());
    ep.res = res.data_ptr<float>();
  }
  if (variant >= 0) {
    const Variant v = decode(variant);
    return run(x, blob, &v, at::Tensor(), out_features, transposed, ep);
  }
  return run(x, blob, nullptr, table, out_features, transposed, ep);
}

// The same call `calls` times back to back in C++ (no Python, no dispatcher between calls):
// what a C probe of this CPU's limit times, so the two compare kernel to kernel. Returns the
// last output.
at::Tensor fused_linear_repeat(const at::Tensor& x, const at::Tensor& blob,
                               const at::Tensor& table, int64_t out_features, bool transposed,
                               int64_t calls) {
  TORCH_CHECK(calls >= 1, "srigl::fused_linear_repeat: calls must be >= 1, got ", calls);
  at::Tensor y;
  for (int64_t c = 0; c < calls; ++c) y = run(x, blob, nullptr, table, out_features, transposed);
  return y;
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
  return g_isa.lower_to(cap);
}

at::Tensor fused_linear_backward(const at::Tensor& grad, const at::Tensor& blob,
                                 int64_t in_features, bool transposed) {
  const LayerView L = view_of(blob);
  TORCH_CHECK(in_features == L.in, "srigl::fused_linear_backward: in_features ", in_features,
              " does not match the packed layer's ", L.in);
  TORCH_CHECK(grad.device().is_cpu() && grad.scalar_type() == at::kFloat,
              "srigl::fused_linear_backward: expected a float32 CPU gradient, got ",
              grad.scalar_type(), " on ", grad.device());
  if (transposed) {
    TORCH_CHECK(grad.dim() == 2 && grad.size(0) == L.out,
                "srigl::fused_linear_backward: expected a gradient [", L.out, ", B], got ",
                grad.sizes());
    return fused_linear_backward(grad.t(), blob, in_features, false).t().contiguous();
  }
  TORCH_CHECK(grad.dim() >= 1 && grad.size(-1) == L.out,
              "srigl::fused_linear_backward: expected a gradient [..., ", L.out, "], got ",
              grad.sizes());
  const at::Tensor g2 = grad.reshape({-1, L.out}).contiguous();
  std::vector<int64_t> shape(grad.sizes().begin(), grad.sizes().end());
  shape.back() = L.in;
  at::Tensor gx = at::empty(shape, grad.options());
  const int64_t m = g2.size(0);
  if (m == 0) return gx;
  if (L.n == 0) return gx.zero_();
  run_backward(L, g2.data_ptr<float>(), L.out, m, gx.data_ptr<float>());
  return gx;
}

}  // namespace srigl

/* The probe kernels (probe_kernels.h) as a shared library, so that the bench times them beside
 * `fused` in one process, on the same weights and inputs, in interleaved paired blocks
 * (suite/bench/vs_probe.py loads it with ctypes). Every run function does `calls` calls back to
 * back, as the stand-alone probes time them. */
#include "probe_kernels.h"

int probe_set_threads(int n) {
  const int old = probe_nthreads;
  probe_nthreads = n < 1 ? 1 : n;
  return old;
}

/* ---- batch 1: kernel 0 zmm vpermt2ps (W 16, B 32), 1 zmm vpermps (16, 16),
 *      2 ymm vpermt2ps (8, 16), 3 ymm vpermps (8, 8) */
typedef struct { Pk p; float* bias; } B1;

void* probe_b1_new(int in, int out, int k, const int* idx, const float* val, const float* bias,
                   int W, int B, int align, int T) {
  (void)in;
  B1* h = calloc(1, sizeof(B1));
  if (!h) return NULL;
  h->p = pack(in, out, k, idx, val, W, B, align, T);
  h->bias = aligned_alloc(64, ((size_t)out * 4 + 63) / 64 * 64);
  memcpy(h->bias, bias, (size_t)out * 4);
  return h;
}

long probe_b1_entries(void* h) { return ((B1*)h)->p.nent; }
long probe_b1_windows(void* h) { return ((B1*)h)->p.nwin; }

void probe_b1_run(void* h_, int kernel, const float* x, float* y, int calls) {
  B1* h = h_;
  for (int c = 0; c < calls; ++c) {
    switch (kernel) {
      case 0: k_z32(&h->p, x, h->bias, y); break;
      case 1: k_z16(&h->p, x, h->bias, y); break;
      case 2: k_y16(&h->p, x, h->bias, y); break;
      default: k_y8(&h->p, x, h->bias, y); break;
    }
  }
}

void probe_b1_free(void* h_) {
  B1* h = h_;
  if (!h) return;
  free(h->p.gw); free(h->p.ge); free(h->p.woff); free(h->p.wcnt); free(h->p.v); free(h->p.ix);
  free(h->bias);
  free(h);
}

/* ---- batch NB (256): variant 0..2 zmm TW 32/64/128 gather-transpose in and out (needs
 *      out % (16 * threads) == 0), 3..5 zmm TW 32 (2 x 2 accumulators) / 64 / 128,
 *      6..7 ymm TW 32 / 64 */
static long xt_cap = 0, yt_cap = 0;

int probe_b256_batch(void) { return NB; }

int probe_b256_run(int variant, int in, int out, int k, const float* v, const uint16_t* ix,
                   const float* X, const float* bias, float* Y, int calls) {
  typedef void (*Fn)(int, int, int, const float*, const uint16_t*, const float*, const float*,
                     float*);
  static const Fn fns[] = {z2_tw32, z2_tw64, z2_tw128, z_tw32, z_tw64, z_tw128, y_tw32, y_tw64};
  if (variant < 0 || variant > 7) return -1;
  if ((long)NB * in > xt_cap) {
    free(XT);
    XT = aligned_alloc(64, (size_t)NB * in * 4);
    xt_cap = (long)NB * in;
  }
  if ((long)NB * out > yt_cap) {
    free(YT);
    YT = aligned_alloc(64, (size_t)NB * out * 4);
    yt_cap = (long)NB * out;
  }
  for (int c = 0; c < calls; ++c) fns[variant](in, out, k, v, ix, X, bias, Y);
  return 0;
}

// The float vector abstraction the dense and fused micro-kernels share: vf (one vector of VL
// floats) and vzero, vbcast, vload, vstore, vfma (a * b + c), vadd. AVX-512 when
// SRIGL_DENSE_AVX512 or SRIGL_ISA_AVX512 is set, AVX2 + FMA when SRIGL_DENSE_AVX2 or
// SRIGL_ISA_AVX2 is, else a portable 8-wide struct. Include it inside the kernel's
// internal-linkage namespace, after <immintrin.h> where a SIMD ISA is set; no standard
// library here.
#pragma once

#if defined(SRIGL_DENSE_AVX512) || defined(SRIGL_ISA_AVX512)
constexpr int VL = 16;
typedef __m512 vf;
#define SRIGL_SIMD_OP(name) _mm512_##name
#elif defined(SRIGL_DENSE_AVX2) || defined(SRIGL_ISA_AVX2)
constexpr int VL = 8;
typedef __m256 vf;
#define SRIGL_SIMD_OP(name) _mm256_##name
#endif

#if defined(SRIGL_SIMD_OP)
inline vf vzero() { return SRIGL_SIMD_OP(setzero_ps)(); }
inline vf vbcast(float a) { return SRIGL_SIMD_OP(set1_ps)(a); }
inline vf vload(const float* p) { return SRIGL_SIMD_OP(loadu_ps)(p); }
inline void vstore(float* p, vf a) { SRIGL_SIMD_OP(storeu_ps)(p, a); }
inline vf vfma(vf a, vf b, vf c) { return SRIGL_SIMD_OP(fmadd_ps)(a, b, c); }
inline vf vadd(vf a, vf b) { return SRIGL_SIMD_OP(add_ps)(a, b); }
#undef SRIGL_SIMD_OP
#else
constexpr int VL = 8;
struct vf {
  float v[VL];
};
inline vf vzero() {
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = 0.0f;
  return r;
}
inline vf vbcast(float a) {
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = a;
  return r;
}
inline vf vload(const float* p) {
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = p[i];
  return r;
}
inline void vstore(float* p, vf a) {
  for (int i = 0; i < VL; ++i) p[i] = a.v[i];
}
inline vf vfma(vf a, vf b, vf c) {
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
  return r;
}
inline vf vadd(vf a, vf b) {
  vf r;
  for (int i = 0; i < VL; ++i) r.v[i] = a.v[i] + b.v[i];
  return r;
}
#endif

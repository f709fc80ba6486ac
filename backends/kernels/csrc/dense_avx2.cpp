// AVX2 + FMA dense micro-kernels (chosen at run time where the CPU has them).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma")
#define SRIGL_DENSE_AVX2 1
#else
#define SRIGL_DENSE_GENERIC 1
#endif
#define SRIGL_DENSE_NS avx2_isa
#define SRIGL_DENSE_TABLE kDenseAvx2
#define SRIGL_DENSE_TABLE_NAME "avx2"
#include "dense_impl.h"

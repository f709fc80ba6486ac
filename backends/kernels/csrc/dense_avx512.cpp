// AVX-512F dense micro-kernels (chosen at run time where the CPU has them).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx2,fma")
#define SRIGL_DENSE_AVX512 1
#else
#define SRIGL_DENSE_GENERIC 1
#endif
#define SRIGL_DENSE_NS avx512_isa
#define SRIGL_DENSE_TABLE kDenseAvx512
#define SRIGL_DENSE_TABLE_NAME "avx512"
#include "dense_impl.h"

// AVX2 + FMA direct-conv micro-kernels (chosen at run time where the CPU has them).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx2,fma")
#define SRIGL_ISA_AVX2 1
#else
#define SRIGL_ISA_GENERIC 1
#endif
#define SRIGL_NS avx2_isa
#define SRIGL_TABLE kConvAvx2
#define SRIGL_TABLE_NAME "avx2"
#include "conv_impl.h"

// AVX-512 direct-conv micro-kernels (chosen at run time where the CPU has them).
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx2")
#define SRIGL_ISA_AVX512 1
#else
#define SRIGL_ISA_GENERIC 1
#endif
#define SRIGL_NS avx512_isa
#define SRIGL_TABLE kConvAvx512
#define SRIGL_TABLE_NAME "avx512"
#include "conv_impl.h"

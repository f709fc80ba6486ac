// Portable direct-conv micro-kernels (baseline x86-64 / any CPU).
#define SRIGL_ISA_GENERIC 1
#define SRIGL_NS generic_isa
#define SRIGL_TABLE kConvGeneric
#define SRIGL_TABLE_NAME "generic"
#include "conv_impl.h"

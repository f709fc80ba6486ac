// Portable dense micro-kernels (baseline x86-64 / any CPU).
#define SRIGL_DENSE_GENERIC 1
#define SRIGL_DENSE_NS generic_isa
#define SRIGL_DENSE_TABLE kDenseGeneric
#define SRIGL_DENSE_TABLE_NAME "generic"
#include "dense_impl.h"

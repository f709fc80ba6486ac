// Registration of the srigl::fused_* operators with torch (schemas and CPU kernels); their
// fake (meta) kernels and the autograd formula are registered from Python
// (backends/kernels/ops.py).
#include <torch/library.h>

#include "fused_ops.h"
#include "work_pool.h"

TORCH_LIBRARY(srigl, m) {
  m.def("fused_linear(Tensor x, Tensor blob, Tensor table, int out_features, bool transposed) "
        "-> Tensor");
  m.def("fused_linear_variant(Tensor x, Tensor blob, int variant, int out_features, "
        "bool transposed) -> Tensor");
  m.def("fused_linear_epilogue(Tensor x, Tensor blob, Tensor table, int variant, "
        "int out_features, bool transposed, Tensor? residual=None, bool relu=False) -> Tensor");
  m.def("fused_linear_repeat(Tensor x, Tensor blob, Tensor table, int out_features, "
        "bool transposed, int calls) -> Tensor");
  m.def("fused_linear_backward(Tensor grad, Tensor blob, int in_features, bool transposed) "
        "-> Tensor");
  m.def("fused_pack(Tensor values, Tensor indices, Tensor active, Tensor bias, int in_features, "
        "int lanes, int block, int windows=0) -> Tensor");
  m.def("fused_resolve(Tensor blob, Tensor table, int batch, int threads) -> int",
        &srigl::fused_resolve);
  m.def("fused_runs_here(Tensor blob, int variant) -> int", &srigl::fused_runs_here);
  m.def("fused_pack_info(Tensor blob) -> int[]", &srigl::fused_pack_info);
  m.def("fused_isa() -> int", &srigl::fused_isa);
  m.def("fused_detected_isa() -> int", &srigl::fused_detected_isa);
  m.def("fused_cap_isa(int cap) -> int", &srigl::fused_cap_isa);
  // the work pool (work_pool.h) of this extension: test and measurement hooks
  m.def("pool_stats() -> int[]", &srigl_pool::stats);
  m.def("pool_set_helper_delay(int us) -> int", &srigl_pool::set_helper_delay_us);
  m.def("pool_set_mode(int mode) -> int", &srigl_pool::set_parallel_mode);
  m.def("pool_set_helper_chunk_delay(int us) -> int", &srigl_pool::set_helper_chunk_delay_us);
  m.def("pool_test_fail_next_spawn(bool on) -> bool", &srigl_pool::test_fail_next_spawn);
  m.def("pool_test_chunks(int nchunks, int throw_chunk, int sleep_us) -> int",
        &srigl_pool::test_chunks);
}

TORCH_LIBRARY_IMPL(srigl, CPU, m) {
  m.impl("fused_linear", &srigl::fused_linear);
  m.impl("fused_linear_variant", &srigl::fused_linear_variant);
  m.impl("fused_linear_repeat", &srigl::fused_linear_repeat);
  m.impl("fused_linear_epilogue", &srigl::fused_linear_epilogue);
  m.impl("fused_linear_backward", &srigl::fused_linear_backward);
  m.impl("fused_pack", &srigl::fused_pack);
}

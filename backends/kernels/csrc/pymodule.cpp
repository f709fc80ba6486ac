// Module-init of a kernel extension built by backends/kernels/build.py: an empty Python module
// named TORCH_EXTENSION_NAME, so importing the library runs its TORCH_LIBRARY registrations
// (no pybind11 needed, which keeps the build short).
#include <Python.h>

#define SRIGL_CONCAT_(a, b) a##b
#define SRIGL_CONCAT(a, b) SRIGL_CONCAT_(a, b)
#define SRIGL_STR_(a) #a
#define SRIGL_STR(a) SRIGL_STR_(a)

static struct PyModuleDef srigl_module_def = {
    PyModuleDef_HEAD_INIT, SRIGL_STR(TORCH_EXTENSION_NAME),
    "C++ kernels of srigl-bench (operators in torch.ops)", -1, nullptr};

PyMODINIT_FUNC SRIGL_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  return PyModule_Create(&srigl_module_def);
}

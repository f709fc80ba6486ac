// Module-init of a kernel extension built by backends/kernels/build.py: a Python module named
// TORCH_EXTENSION_NAME, so importing the library runs its TORCH_LIBRARY registrations. It is
// empty unless one of the extension's sources defines srigl_module_methods() (its methods; the
// fused extension's direct entry, fused_direct.cpp); this file itself needs no pybind11.
#include <Python.h>

#define SRIGL_CONCAT_(a, b) a##b
#define SRIGL_CONCAT(a, b) SRIGL_CONCAT_(a, b)
#define SRIGL_STR_(a) #a
#define SRIGL_STR(a) SRIGL_STR_(a)

static struct PyModuleDef srigl_module_def = {
    PyModuleDef_HEAD_INIT, SRIGL_STR(TORCH_EXTENSION_NAME),
    "C++ kernels of srigl-bench (operators in torch.ops)", -1, nullptr};

// Defined by an extension that has Python methods; null (weak, undefined) in the others.
extern "C" PyMethodDef* srigl_module_methods() __attribute__((weak));

PyMODINIT_FUNC SRIGL_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  if (srigl_module_methods) srigl_module_def.m_methods = srigl_module_methods();
  return PyModule_Create(&srigl_module_def);
}

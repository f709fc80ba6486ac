// A direct Python entry to the fused forward, below the torch dispatcher: the Python module of
// the extension gets `linear(x, blob, table, out_features[, transposed])`, which unpacks the
// tensors and calls srigl::fused_linear (the same C++ function the srigl::fused_linear
// operator runs).
// At batch 1 and high sparsity the dispatcher's argument parsing and boxing cost about as much
// as the kernel; the eager forward (backends/fused.py) calls this entry only where nothing
// above the dispatcher's CPU kernel could act: a plain CPU tensor, no gradient needed, no
// tracing, no torch function mode, no functorch transform (else it calls the operator).
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>

#include "fused_ops.h"

namespace {

PyObject* direct_linear(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  if (nargs != 4 && nargs != 5) {
    PyErr_Format(PyExc_TypeError,
                 "linear(x, blob, table, out_features[, transposed]): %zd arguments given", nargs);
    return nullptr;
  }
  for (int i = 0; i < 3; ++i)
    if (!THPVariable_Check(args[i])) {
      PyErr_Format(PyExc_TypeError, "linear: argument %d must be a tensor, not %s", i,
                   Py_TYPE(args[i])->tp_name);
      return nullptr;
    }
  const int64_t out_features = PyLong_AsLongLong(args[3]);
  if (out_features == -1 && PyErr_Occurred()) return nullptr;
  const int transposed = nargs == 5 ? PyObject_IsTrue(args[4]) : 0;
  if (transposed < 0) return nullptr;
  const at::Tensor& x = THPVariable_Unpack(args[0]);
  const at::Tensor& blob = THPVariable_Unpack(args[1]);
  const at::Tensor& table = THPVariable_Unpack(args[2]);
  at::Tensor y;
  {
    pybind11::gil_scoped_release no_gil;
    y = srigl::fused_linear(x, blob, table, out_features, transposed != 0);
  }
  return THPVariable_Wrap(std::move(y));
  END_HANDLE_TH_ERRORS
}

PyMethodDef kMethods[] = {
    {"linear", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(direct_linear)),
     METH_FASTCALL,
     "linear(x, blob, table, out_features[, transposed]) -> y: srigl::fused_linear without "
     "the dispatcher (x float32 CPU [..., in], or [in, B] when transposed; no autograd)"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

// Picked up by pymodule.cpp (a weak symbol there): the methods of the extension's module.
extern "C" PyMethodDef* srigl_module_methods() { return kMethods; }

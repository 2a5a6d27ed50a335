// The probe's per-layer stamps and backward hooks in C++ (engine/run/native.py builds and loads it).
//
// Why: with Python hooks, a profiled LeNet-5 step (12 layers, ~7.5 ms on one CPU thread) pays
// ~90 us for its backward hooks alone: taking ``out.grad_fn`` creates the node's Python object,
// registering needs a dict, and each hook call takes the GIL and wraps the gradients as Python
// tensors. Here a layer's output is stamped and its autograd node gets a C++ pre-hook in one call,
// without creating any Python object; the hook writes a clock reading into a preallocated array.
//
// Clock: CLOCK_MONOTONIC, the clock of Python's time.perf_counter_ns on Linux (native.py checks
// that the two agree before using this module). Page faults: getrusage(RUSAGE_THREAD).ru_minflt.
//
// Python API (one Stamper per Probe, used from the run's thread):
//   Stamper(n)                  n layers
//   s.reset(count_faults)       before a step: no backward stamps, nothing hooked
//   s.start()                   the forward's first stamp (the last thing before the first layer);
//                               forgets the nodes seen (raw pointers only: nothing here holds a graph)
//   s.stamp(k, node_id, out)    layer k has produced ``out``: stamp it, hook the node that made it
//                               (once per node, none without grad), stamp again (resume)
//   s.disarm()                  the hooks registered so far write where nobody reads
//   s.read()                    (fwd[n+1], resume[n+1], order, bwd[n] with None, hooked[n], faults)
//   s.last()                    the layer whose backward hook fired last, or None
//   now()                       the clock, ns
#include <Python.h>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/python_variable.h>

#include <sys/resource.h>
#include <time.h>

#include <exception>
#include <memory>
#include <new>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

using torch::autograd::variable_list;

inline int64_t now_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline int64_t minor_faults() {
#ifdef RUSAGE_THREAD
  struct rusage ru;
  if (getrusage(RUSAGE_THREAD, &ru) == 0) return static_cast<int64_t>(ru.ru_minflt);
#endif
  return -1;
}

// What the backward hooks of one armed step write; shared with the hooks, so a graph that outlives
// its step (a failed step) writes into a book nobody reads after ``disarm``.
struct Book {
  std::vector<int64_t> bwd;  // [k]: when layer k's backward began (its hook fired); -1: never
  std::vector<int32_t> order;  // layers whose hook fired, in firing order
  explicit Book(int n) : bwd(n, -1) { order.reserve(n); }
};

struct StampHook final : torch::autograd::FunctionPreHook {
  std::shared_ptr<Book> book;
  int k;
  StampHook(std::shared_ptr<Book> b, int layer) : book(std::move(b)), k(layer) {}
  variable_list operator()(const variable_list& grads) override {
    book->bwd[k] = now_ns();
    book->order.push_back(k);
    return grads;
  }
};

struct State {
  int n;
  bool count_faults = false;
  std::shared_ptr<Book> book;
  std::vector<int64_t> fwd, resume, faults;
  std::vector<uint8_t> hooked;
  std::unordered_set<const void*> seen;
  explicit State(int layers)
      : n(layers), book(std::make_shared<Book>(layers)), fwd(layers + 1, 0), resume(layers + 1, 0),
        faults(layers + 1, 0), hooked(layers, 0) {}
};

struct StamperObject {
  PyObject_HEAD
  State* s;
};

PyObject* int_list(const std::vector<int64_t>& v) {
  PyObject* out = PyList_New(static_cast<Py_ssize_t>(v.size()));
  if (!out) return nullptr;
  for (size_t i = 0; i < v.size(); ++i) {
    PyObject* x = PyLong_FromLongLong(v[i]);
    if (!x) { Py_DECREF(out); return nullptr; }
    PyList_SET_ITEM(out, static_cast<Py_ssize_t>(i), x);
  }
  return out;
}

PyObject* Stamper_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
  int n = 0;
  static const char* kwlist[] = {"n", nullptr};
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "i", const_cast<char**>(kwlist), &n)) return nullptr;
  if (n < 0) { PyErr_SetString(PyExc_ValueError, "n < 0"); return nullptr; }
  auto* self = reinterpret_cast<StamperObject*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->s = new (std::nothrow) State(n);
  if (!self->s) { Py_DECREF(self); return PyErr_NoMemory(); }
  return reinterpret_cast<PyObject*>(self);
}

void Stamper_dealloc(StamperObject* self) {
  delete self->s;
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* Stamper_reset(StamperObject* self, PyObject* count_faults) {
  int flag = PyObject_IsTrue(count_faults);
  if (flag < 0) return nullptr;
  State& s = *self->s;
  s.count_faults = flag && minor_faults() >= 0;
  Book& b = *s.book;
  std::fill(b.bwd.begin(), b.bwd.end(), -1);
  b.order.clear();
  std::fill(s.hooked.begin(), s.hooked.end(), 0);
  Py_RETURN_NONE;
}

PyObject* Stamper_start(StamperObject* self, PyObject*) {
  State& s = *self->s;
  s.seen.clear();
  if (s.count_faults) s.faults[0] = minor_faults();
  s.fwd[0] = s.resume[0] = now_ns();
  Py_RETURN_NONE;
}

PyObject* Stamper_stamp(StamperObject* self, PyObject* const* args, Py_ssize_t nargs) {
  State& s = *self->s;
  const int64_t t = now_ns();  // first: the layer's time ends here
  if (nargs != 3) {
    PyErr_SetString(PyExc_TypeError, "stamp(k, node_id, out) takes 3 arguments");
    return nullptr;
  }
  const long k = PyLong_AsLong(args[0]);
  if (k == -1 && PyErr_Occurred()) return nullptr;
  if (k < 0 || k >= s.n) {
    PyErr_SetString(PyExc_IndexError, "layer index out of range");
    return nullptr;
  }
  s.fwd[k + 1] = t;
  if (s.count_faults) s.faults[k + 1] = minor_faults();
  PyObject* out = args[2];
  if (THPVariable_Check(out)) {
    try {
      const auto& gf = THPVariable_Unpack(out).grad_fn();
      if (gf && s.seen.insert(gf.get()).second) {
        gf->add_pre_hook(std::make_unique<StampHook>(s.book, static_cast<int>(k)));
        s.hooked[k] = 1;
      }
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
      return nullptr;
    }
  }
  s.resume[k + 1] = now_ns();  // registering the hook is no layer's time
  Py_RETURN_NONE;
}

PyObject* Stamper_disarm(StamperObject* self, PyObject*) {
  State& s = *self->s;
  try {
    s.book = std::make_shared<Book>(s.n);
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  }
  s.seen.clear();
  Py_RETURN_NONE;
}

PyObject* Stamper_read(StamperObject* self, PyObject*) {
  State& s = *self->s;
  const Book& b = *s.book;
  PyObject* fwd = int_list(s.fwd);
  PyObject* resume = int_list(s.resume);
  PyObject* order = PyList_New(static_cast<Py_ssize_t>(b.order.size()));
  PyObject* bwd = PyList_New(s.n);
  PyObject* hooked = PyList_New(s.n);
  PyObject* faults = s.count_faults ? int_list(s.faults) : PyList_New(0);
  if (!fwd || !resume || !order || !bwd || !hooked || !faults) goto fail;
  for (size_t i = 0; i < b.order.size(); ++i) {
    PyObject* x = PyLong_FromLong(b.order[i]);
    if (!x) goto fail;
    PyList_SET_ITEM(order, static_cast<Py_ssize_t>(i), x);
  }
  for (int k = 0; k < s.n; ++k) {
    PyObject* x;
    if (b.bwd[k] < 0) {
      x = Py_None;
      Py_INCREF(x);
    } else if (!(x = PyLong_FromLongLong(b.bwd[k]))) {
      goto fail;
    }
    PyList_SET_ITEM(bwd, k, x);
    PyObject* h = s.hooked[k] ? Py_True : Py_False;
    Py_INCREF(h);
    PyList_SET_ITEM(hooked, k, h);
  }
  return Py_BuildValue("(NNNNNN)", fwd, resume, order, bwd, hooked, faults);
fail:
  Py_XDECREF(fwd); Py_XDECREF(resume); Py_XDECREF(order);
  Py_XDECREF(bwd); Py_XDECREF(hooked); Py_XDECREF(faults);
  return nullptr;
}

PyObject* Stamper_last(StamperObject* self, PyObject*) {
  const Book& b = *self->s->book;
  if (b.order.empty()) Py_RETURN_NONE;
  return PyLong_FromLong(b.order.back());
}

PyObject* module_now(PyObject*, PyObject*) { return PyLong_FromLongLong(now_ns()); }

PyMethodDef Stamper_methods[] = {
    {"reset", reinterpret_cast<PyCFunction>(Stamper_reset), METH_O, "reset(count_faults): before a step"},
    {"start", reinterpret_cast<PyCFunction>(Stamper_start), METH_NOARGS, "the forward's first stamp"},
    {"stamp", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Stamper_stamp)), METH_FASTCALL,
     "stamp(k, node_id, out): layer k produced out"},
    {"disarm", reinterpret_cast<PyCFunction>(Stamper_disarm), METH_NOARGS,
     "the hooks registered so far write where nobody reads"},
    {"read", reinterpret_cast<PyCFunction>(Stamper_read), METH_NOARGS,
     "(fwd, resume, order, bwd, hooked, faults)"},
    {"last", reinterpret_cast<PyCFunction>(Stamper_last), METH_NOARGS, "the last layer whose hook fired"},
    {nullptr, nullptr, 0, nullptr}};

PyTypeObject StamperType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyMethodDef module_methods[] = {
    {"now", module_now, METH_NOARGS, "CLOCK_MONOTONIC in ns"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, nullptr, "LayerScope's native probe stamps", -1, module_methods};

}  // namespace

#ifndef LAYERSCOPE_MODULE
#define LAYERSCOPE_MODULE TORCH_EXTENSION_NAME
#endif
#define LS_CAT2(a, b) a##b
#define LS_CAT(a, b) LS_CAT2(a, b)
#define LS_STR2(a) #a
#define LS_STR(a) LS_STR2(a)

PyMODINIT_FUNC LS_CAT(PyInit_, LAYERSCOPE_MODULE)() {
  module_def.m_name = LS_STR(LAYERSCOPE_MODULE);
  StamperType.tp_name = LS_STR(LAYERSCOPE_MODULE) ".Stamper";
  StamperType.tp_basicsize = sizeof(StamperObject);
  StamperType.tp_flags = Py_TPFLAGS_DEFAULT;
  StamperType.tp_doc = "Per-layer stamps and backward pre-hooks of one probe";
  StamperType.tp_new = Stamper_new;
  StamperType.tp_dealloc = reinterpret_cast<destructor>(Stamper_dealloc);
  StamperType.tp_methods = Stamper_methods;
  if (PyType_Ready(&StamperType) < 0) return nullptr;
  PyObject* m = PyModule_Create(&module_def);
  if (!m) return nullptr;
  Py_INCREF(&StamperType);
  if (PyModule_AddObject(m, "Stamper", reinterpret_cast<PyObject*>(&StamperType)) < 0) {
    Py_DECREF(&StamperType);
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

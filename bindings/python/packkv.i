/*
 * SWIG interface of libpackkv for Python: the internal module `packkv._raw.swig`, re-exported
 * as the private package `packkv._raw` (src/packkv/_raw/__init__.py). Not part of the API.
 *
 * It wraps every function of include/packkv/packkv.h one to one (names without the
 * `packkv_` prefix), and those of include/packkv/packkv_experimental.h (names `x_*`:
 * pools, truncate, fork, window, export/import, set_parallel; not frozen, they change with the
 * library).
 * The Pythonic API (packkv.Cache, packkv.Pool, exceptions, numpy/torch handling) is written
 * on top of it in src/packkv/*.py.
 *
 * Conventions of the raw module
 *   - A function returning packkv_status_t returns None (or its out-parameters) on
 *     PACKKV_OK and raises the packkv.PackKVError subclass mapped from the status otherwise;
 *     the exception carries the status and the thread-local C message, read in the same
 *     C wrapper right after the call (nothing can run in between on this thread).
 *   - Out-parameters (int32_t* bits, int32_t* device, int64_t* n_tokens, size_t* bytes,
 *     packkv_cache_t** out) are returned instead of passed.
 *   - Sequence ids / token counts (h_seq_ids, h_n_tokens) take host int32 arrays or lists
 *     (numpy.i); n_seqs is implied by len(h_seq_ids).
 *   - Data arguments (k_new, v_new, q, probs, scores, out, lse, k_out, v_out, workspace)
 *     take either a C-contiguous numpy array (host memory; numpy.i checks contiguity,
 *     byte order and, for float* arguments, dtype float32), an int address (host or
 *     device memory, e.g. torch.Tensor.data_ptr()), or None (NULL).
 *   - A numpy array handed to a data argument is checked before the C call against what the
 *     call will read or write given its other arguments (the cache's n_kv_heads and
 *     head_dim, the token counts, n_seqs, n_q_heads, ld_*, capacity_tokens,
 *     workspace_bytes) and, for k_new / v_new / q, against the dtype argument: a short or
 *     mistyped array raises packkv.InvalidArgument instead of reading or writing out of
 *     bounds. An int address is trusted as given (it may be device memory).
 *   - `stream` takes an int (cudaStream_t as integer, e.g.
 *     torch.cuda.current_stream().cuda_stream) or None; it defaults to NULL.
 *   - The GIL is released around every C call (-threads); the library never calls back
 *     into Python (except through a task runner the caller gives x_cache_set_parallel, e.g. a
 *     ctypes callback, which ctypes runs holding the GIL).
 */
%module(package="packkv._raw") swig

%{
#define SWIG_FILE_WITH_INIT
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"
%}

%include "stdint.i"
%include "numpy.i"

%init %{
  import_array();
%}

/* ---- names ------------------------------------------------------------------------------- */
/* packkv_foo -> foo, PACKKV_FOO -> FOO; the structs get CamelCase names (the struct tag of the
 * stats struct would otherwise clash with the function cache_stats). */
%rename("%(regex:/^(packkv_|PACKKV_)(.*)/\\2/)s") "";
%rename(CacheParamsStruct) packkv_cache_params;
%rename(CacheStatsStruct) packkv_cache_stats_s;
%rename(PoolParamsStruct) packkv_x_pool_params;
%rename(PoolStatsStruct) packkv_x_pool_stats_s;

/* sizeof of the structs as this binding was compiled: what struct_size must be set to. */
%constant size_t CACHE_PARAMS_STRUCT_SIZE = sizeof(packkv_cache_params_t);
%constant size_t CACHE_STATS_STRUCT_SIZE = sizeof(packkv_cache_stats_t);
%constant size_t POOL_PARAMS_STRUCT_SIZE = sizeof(packkv_x_pool_params_t);
%constant size_t POOL_STATS_STRUCT_SIZE = sizeof(packkv_x_pool_stats_t);

/* ---- status -> exception ------------------------------------------------------------------- */
%fragment("packkv_raise", "header") {
/* Sets the Python exception for a failed call. Must run right after the C call on the same
 * thread: the message is copied before anything else can touch the thread-local last error.
 * The exception object comes from packkv._errors.error_from_status(status, message). */
static void packkv_py_raise_status(packkv_status_t status) {
  const char* m = packkv_last_error_message();
  PyObject* msg = PyUnicode_DecodeUTF8(m, (Py_ssize_t)strlen(m), "replace");
  PyObject* mod = NULL;
  PyObject* exc = NULL;
  if (msg) mod = PyImport_ImportModule("packkv._errors");
  if (mod) exc = PyObject_CallMethod(mod, "error_from_status", "iO", (int)status, msg);
  if (exc) {
    PyErr_SetObject((PyObject*)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  } else {
    PyErr_Clear();
    if (msg)
      PyErr_Format(PyExc_RuntimeError, "libpackkv status %d: %U", (int)status, msg);
    else
      PyErr_Format(PyExc_RuntimeError, "libpackkv status %d", (int)status);
  }
  Py_XDECREF(mod);
  Py_XDECREF(msg);
}
}

%typemap(out, fragment="packkv_raise") packkv_status_t {
  if ($1 != PACKKV_OK) {
    packkv_py_raise_status($1);
    SWIG_fail;
  }
  $result = SWIG_Py_Void();
}

/* ---- out-parameters ------------------------------------------------------------------------ */
/* Out-parameters are returned: alone when there is one, as a list when there are several.
 * (Written here instead of typemaps.i's OUTPUT because SWIG >= 4.3 appends outputs to a
 * non-void function's None result as a list [None, value].) */
%fragment("packkv_append", "header") {
/* Appends obj (a new reference) to the wrapper's result: replaces a None/NULL result, turns
 * a single value into a list. Returns the new result, NULL (with a Python error) on failure. */
static PyObject* packkv_py_append(PyObject* result, PyObject* obj) {
  if (!obj) {
    Py_XDECREF(result);
    return NULL;
  }
  if (!result || result == Py_None) {
    Py_XDECREF(result);
    return obj;
  }
  if (!PyList_Check(result)) {
    PyObject* list = PyList_New(1);
    if (!list) {
      Py_DECREF(result);
      Py_DECREF(obj);
      return NULL;
    }
    PyList_SET_ITEM(list, 0, result);
    result = list;
  }
  if (PyList_Append(result, obj) < 0) {
    Py_DECREF(result);
    Py_DECREF(obj);
    return NULL;
  }
  Py_DECREF(obj);
  return result;
}
}

%define PACKKV_OUT_SCALAR(TYPE, NAME, TO_PY)
%typemap(in, numinputs=0) TYPE* NAME (TYPE temp = 0) {
  $1 = &temp;
}
%typemap(argout, fragment="packkv_append") TYPE* NAME {
  $result = packkv_py_append($result, TO_PY(*$1));
  if (!$result) SWIG_fail;
}
%enddef
PACKKV_OUT_SCALAR(int32_t, bits, PyLong_FromLong)
PACKKV_OUT_SCALAR(int32_t, device, PyLong_FromLong)
PACKKV_OUT_SCALAR(int64_t, n_tokens, PyLong_FromLongLong)
PACKKV_OUT_SCALAR(size_t, bytes, PyLong_FromSize_t)
PACKKV_OUT_SCALAR(int64_t, tokens, PyLong_FromLongLong)
PACKKV_OUT_SCALAR(int64_t, page_bytes, PyLong_FromLongLong)
PACKKV_OUT_SCALAR(int64_t, first_token, PyLong_FromLongLong)
PACKKV_OUT_SCALAR(size_t, written, PyLong_FromSize_t)

%typemap(in, numinputs=0) packkv_cache_t** out (packkv_cache_t* temp = NULL) {
  $1 = &temp;
}
%typemap(argout, fragment="packkv_append") packkv_cache_t** out {
  $result = packkv_py_append($result,
                             SWIG_NewPointerObj(SWIG_as_voidptr(*$1), $*1_descriptor, 0));
  if (!$result) SWIG_fail;
}

%typemap(in, numinputs=0) packkv_x_pool_t** out (packkv_x_pool_t* temp = NULL) {
  $1 = &temp;
}
%typemap(argout, fragment="packkv_append") packkv_x_pool_t** out {
  $result = packkv_py_append($result,
                             SWIG_NewPointerObj(SWIG_as_voidptr(*$1), $*1_descriptor, 0));
  if (!$result) SWIG_fail;
}

/* copy_last_error(cap) -> [full_length, text truncated to cap-1 characters] */
%typemap(in) (char* buf, size_t cap) {
  Py_ssize_t n = PyLong_AsSsize_t($input);
  if (n == -1 && PyErr_Occurred()) SWIG_fail;
  if (n < 0) {
    PyErr_SetString(PyExc_ValueError, "cap must be >= 0");
    SWIG_fail;
  }
  $2 = (size_t)n;
  $1 = n > 0 ? (char*)calloc((size_t)n, 1) : NULL;
  if (n > 0 && !$1) {
    PyErr_NoMemory();
    SWIG_fail;
  }
}
%typemap(argout, fragment="packkv_append") (char* buf, size_t cap) {
  PyObject* text = $1 ? PyUnicode_DecodeUTF8($1, (Py_ssize_t)strlen($1), "replace")
                      : PyUnicode_FromString("");
  if (!text) SWIG_fail;
  $result = packkv_py_append($result, text);
  if (!$result) SWIG_fail;
}
%typemap(freearg) (char* buf, size_t cap) {
  free($1);
}

/* ---- byte buffers of export / import (any object with the buffer protocol) ------------------ */
%typemap(in) (void* h_buf, size_t capacity) (Py_buffer view, int have = 0) {
  if (PyObject_GetBuffer($input, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) SWIG_fail;
  have = 1;
  $1 = view.buf;
  $2 = (size_t)view.len;
}
%typemap(freearg) (void* h_buf, size_t capacity) {
  if (have$argnum) PyBuffer_Release(&view$argnum);
}
%typemap(in) (const void* h_buf, size_t size) (Py_buffer view, int have = 0) {
  if (PyObject_GetBuffer($input, &view, PyBUF_C_CONTIGUOUS) < 0) SWIG_fail;
  have = 1;
  $1 = view.buf;
  $2 = (size_t)view.len;
}
%typemap(freearg) (const void* h_buf, size_t size) {
  if (have$argnum) PyBuffer_Release(&view$argnum);
}

/* ---- host int32 arrays (numpy.i) ----------------------------------------------------------- */
%apply (int DIM1, int* IN_ARRAY1) { (int32_t n_seqs, const int32_t* h_seq_ids) };

/* h_n_tokens: one int32 per sequence of the same call. In packkv_cache_append, n_seqs is
 * the wrapper's arg2 (already converted from h_seq_ids when this typemap runs). */
%typemap(in, fragment="NumPy_Fragments") const int32_t* h_n_tokens
    (PyArrayObject* ary = NULL, int is_new = 0) {
  ary = obj_to_array_contiguous_allow_conversion($input, NPY_INT32, &is_new);
  if (!ary || !require_dimensions(ary, 1) || !require_native(ary)) SWIG_fail;
  if (array_size(ary, 0) != (npy_intp)arg2) {
    PyErr_SetString(PyExc_ValueError,
                    "h_n_tokens must have exactly one entry per entry of h_seq_ids");
    SWIG_fail;
  }
  $1 = (const int32_t*)array_data(ary);
}
%typemap(freearg) const int32_t* h_n_tokens {
  if (is_new$argnum && ary$argnum) { Py_DECREF(ary$argnum); }
}

/* ---- data buffers: numpy array (host), int address (host or device), or None --------------- */
%fragment("packkv_buffer", "header", fragment="NumPy_Fragments", fragment="packkv_raise") {
/* What a data argument was given as: a numpy array (nbytes >= 0, its typenum and itemsize) or
 * an address / None (nbytes = -1: nothing to check). */
typedef struct {
  Py_ssize_t nbytes;
  int typenum;
  int itemsize;
} packkv_py_buf_t;

/* Resolves a data argument to a pointer. typecode NPY_NOTYPE accepts any dtype (the C call
 * carries the dtype separately); writable requires a writeable array for outputs. */
static int packkv_py_buffer(PyObject* obj, int typecode, int writable, void** out,
                            packkv_py_buf_t* info) {
  PyArrayObject* ary;
  info->nbytes = -1;
  info->typenum = -1;
  info->itemsize = 0;
  if (obj == Py_None) {
    *out = NULL;
    return 0;
  }
  if (PyLong_Check(obj)) {
    void* p = PyLong_AsVoidPtr(obj);
    if (!p && PyErr_Occurred()) return -1;
    *out = p;
    return 0;
  }
  ary = obj_to_array_no_conversion(obj, typecode);
  if (!ary || !require_contiguous(ary) || !require_native(ary)) return -1;
  if (writable && !PyArray_ISWRITEABLE(ary)) {
    PyErr_SetString(PyExc_ValueError, "output array must be writeable");
    return -1;
  }
  info->nbytes = (Py_ssize_t)PyArray_NBYTES(ary);
  info->typenum = PyArray_TYPE(ary);
  info->itemsize = (int)PyArray_ITEMSIZE(ary);
  *out = array_data(ary);
  return 0;
}

/* Raises packkv.InvalidArgument (through packkv._errors.error_from_status) with a message. */
static void packkv_py_invalid(const char* fmt, ...) {
  va_list ap;
  PyObject* msg;
  PyObject* mod = NULL;
  PyObject* exc = NULL;
  va_start(ap, fmt);
  msg = PyUnicode_FromFormatV(fmt, ap);
  va_end(ap);
  if (msg) mod = PyImport_ImportModule("packkv._errors");
  if (mod) exc = PyObject_CallMethod(mod, "error_from_status", "iO",
                                     (int)PACKKV_ERR_INVALID_ARGUMENT, msg);
  if (exc) {
    PyErr_SetObject((PyObject*)Py_TYPE(exc), exc);
    Py_DECREF(exc);
  } else if (!PyErr_Occurred()) {
    PyErr_SetString(PyExc_ValueError, msg ? PyUnicode_AsUTF8(msg) : "invalid argument");
  }
  Py_XDECREF(mod);
  Py_XDECREF(msg);
}

/* Checks a numpy array given for `name`: at least `elems` elements of `elem_size` bytes
 * (elems < 0 counts as 0), and, when dtype >= 0, a numpy dtype matching that packkv dtype.
 * Addresses and None (info.nbytes < 0) pass. Returns 0, or -1 with packkv.InvalidArgument. */
static int packkv_py_check_buf(const char* name, packkv_py_buf_t info, long long elems,
                               int elem_size, packkv_dtype_t dtype) {
  if (info.nbytes < 0) return 0;
  if (dtype >= 0) {
    int ok = (dtype == PACKKV_DTYPE_F16 && info.typenum == NPY_FLOAT16) ||
             (dtype == PACKKV_DTYPE_F32 && info.typenum == NPY_FLOAT32) ||
             (dtype == PACKKV_DTYPE_BF16 && info.itemsize == 2 && info.typenum != NPY_FLOAT16);
    if (!ok && (dtype == PACKKV_DTYPE_F16 || dtype == PACKKV_DTYPE_F32 ||
                dtype == PACKKV_DTYPE_BF16)) {
      packkv_py_invalid("%s: a numpy array of %d-byte elements (numpy type %d) does not hold "
                        "the dtype argument's %s values", name, info.itemsize, info.typenum,
                        dtype == PACKKV_DTYPE_F16 ? "float16"
                        : dtype == PACKKV_DTYPE_F32 ? "float32" : "bfloat16 (2-byte)");
      return -1;
    }
  }
  if (elems < 0) elems = 0;
  if (elem_size > 0 && (unsigned long long)elems >
                           (unsigned long long)info.nbytes / (unsigned long long)elem_size) {
    packkv_py_invalid("%s: the numpy array holds %zd bytes; this call reaches %lld elements "
                      "of %d bytes", name, info.nbytes, elems, elem_size);
    return -1;
  }
  return 0;
}

/* Bytes per element of a packkv dtype, 0 for an unknown one (the C call rejects it). */
static int packkv_py_dtype_size(packkv_dtype_t dtype) {
  return dtype == PACKKV_DTYPE_F32 ? 4
         : (dtype == PACKKV_DTYPE_F16 || dtype == PACKKV_DTYPE_BF16) ? 2 : 0;
}

/* n_kv_heads * head_dim of a cache, or -1 if it cannot be read (NULL cache: the C call
 * reports it). */
static long long packkv_py_row(const packkv_cache_t* cache) {
  packkv_cache_params_t p;
  if (!cache) return -1;
  p.struct_size = (uint32_t)sizeof p;
  if (packkv_cache_get_params(cache, &p) != PACKKV_OK) return -1;
  return (long long)p.n_kv_heads * p.head_dim;
}

/* A product of sizes for a bound, saturating (negative factors count as 0). */
static long long packkv_py_mul(long long a, long long b) {
  if (a <= 0 || b <= 0) return 0;
  if (a > LLONG_MAX / b) return LLONG_MAX;
  return a * b;
}
}

%typemap(in, fragment="packkv_buffer")
    const void* k_new (packkv_py_buf_t info), const void* v_new (packkv_py_buf_t info),
    const void* q (packkv_py_buf_t info) {
  void* p = NULL;
  if (packkv_py_buffer($input, NPY_NOTYPE, 0, &p, &info) < 0) SWIG_fail;
  $1 = ($1_ltype)p;
}
%typemap(in, fragment="packkv_buffer") const float* probs (packkv_py_buf_t info) {
  void* p = NULL;
  if (packkv_py_buffer($input, NPY_FLOAT32, 0, &p, &info) < 0) SWIG_fail;
  $1 = ($1_ltype)p;
}
%typemap(in, fragment="packkv_buffer")
    float* scores (packkv_py_buf_t info), float* out (packkv_py_buf_t info),
    float* lse (packkv_py_buf_t info), float* k_out (packkv_py_buf_t info),
    float* v_out (packkv_py_buf_t info) {
  void* p = NULL;
  if (packkv_py_buffer($input, NPY_FLOAT32, 1, &p, &info) < 0) SWIG_fail;
  $1 = ($1_ltype)p;
}
%typemap(in, fragment="packkv_buffer") void* workspace (packkv_py_buf_t info) {
  void* p = NULL;
  if (packkv_py_buffer($input, NPY_NOTYPE, 1, &p, &info) < 0) SWIG_fail;
  $1 = ($1_ltype)p;
}

/* Size and dtype checks of numpy arrays, per function, before the C call (the GIL is still
 * held here; the call itself releases it). argN / infoN are the wrapper's converted argument N
 * and the packkv_py_buf_t of data argument N (1-based, as in the C prototype). */
%exception packkv_cache_append {
  {
    /* (cache 1, n_seqs 2, h_seq_ids 3, h_n_tokens 4, k_new 5, v_new 6, dtype 7) */
    long long row = packkv_py_row(arg1), total = 0;
    int32_t i;
    for (i = 0; i < arg2; i++) total += arg4[i] > 0 ? arg4[i] : 0;
    if (row >= 0 &&
        (packkv_py_check_buf("k_new", info5, packkv_py_mul(total, row),
                             packkv_py_dtype_size(arg7), arg7) < 0 ||
         packkv_py_check_buf("v_new", info6, packkv_py_mul(total, row),
                             packkv_py_dtype_size(arg7), arg7) < 0))
      SWIG_fail;
  }
  $action
}
%exception packkv_cache_decompress {
  {
    /* (cache 1, seq_id 2, k_out 3, v_out 4, capacity_tokens 5) */
    long long row = packkv_py_row(arg1);
    if (row >= 0 &&
        (packkv_py_check_buf("k_out", info3, packkv_py_mul(arg5, row), 4, -1) < 0 ||
         packkv_py_check_buf("v_out", info4, packkv_py_mul(arg5, row), 4, -1) < 0))
      SWIG_fail;
  }
  $action
}
%exception packkv_attn_scores {
  {
    /* (cache 1, n_seqs 2, ids 3, n_q_heads 4, q 5, q_dtype 6, scores 7, ld_scores 8,
     *  workspace 9, workspace_bytes 10) */
    packkv_cache_params_t p;
    p.struct_size = (uint32_t)sizeof p;
    if (arg1 && packkv_cache_get_params(arg1, &p) == PACKKV_OK) {
      long long rows = packkv_py_mul(arg2, arg4);
      if (packkv_py_check_buf("q", info5, packkv_py_mul(rows, p.head_dim),
                              packkv_py_dtype_size(arg6), arg6) < 0 ||
          packkv_py_check_buf("scores", info7, packkv_py_mul(rows, arg8), 4, -1) < 0 ||
          packkv_py_check_buf("workspace", info9, (long long)arg10, 1, -1) < 0)
        SWIG_fail;
    }
  }
  $action
}
%exception packkv_attn_apply {
  {
    /* (cache 1, n_seqs 2, ids 3, n_q_heads 4, probs 5, ld_probs 6, out 7, workspace 8,
     *  workspace_bytes 9) */
    packkv_cache_params_t p;
    p.struct_size = (uint32_t)sizeof p;
    if (arg1 && packkv_cache_get_params(arg1, &p) == PACKKV_OK) {
      long long rows = packkv_py_mul(arg2, arg4);
      if (packkv_py_check_buf("probs", info5, packkv_py_mul(rows, arg6), 4, -1) < 0 ||
          packkv_py_check_buf("out", info7, packkv_py_mul(rows, p.head_dim), 4, -1) < 0 ||
          packkv_py_check_buf("workspace", info8, (long long)arg9, 1, -1) < 0)
        SWIG_fail;
    }
  }
  $action
}
%exception packkv_attn_decode {
  {
    /* (cache 1, n_seqs 2, ids 3, n_q_heads 4, q 5, q_dtype 6, scale 7, out 8, lse 9,
     *  workspace 10, workspace_bytes 11) */
    packkv_cache_params_t p;
    p.struct_size = (uint32_t)sizeof p;
    if (arg1 && packkv_cache_get_params(arg1, &p) == PACKKV_OK) {
      long long rows = packkv_py_mul(arg2, arg4);
      if (packkv_py_check_buf("q", info5, packkv_py_mul(rows, p.head_dim),
                              packkv_py_dtype_size(arg6), arg6) < 0 ||
          packkv_py_check_buf("out", info8, packkv_py_mul(rows, p.head_dim), 4, -1) < 0 ||
          packkv_py_check_buf("lse", info9, rows, 4, -1) < 0 ||
          packkv_py_check_buf("workspace", info10, (long long)arg11, 1, -1) < 0)
        SWIG_fail;
    }
  }
  $action
}
%exception packkv_attn_decode_multi {
  {
    /* (cache 1, n_seqs 2, ids 3, n_q_heads 4, q_len 5, q 6, q_dtype 7, scale 8, out 9, lse 10,
     *  workspace 11, workspace_bytes 12) */
    packkv_cache_params_t p;
    p.struct_size = (uint32_t)sizeof p;
    if (arg1 && packkv_cache_get_params(arg1, &p) == PACKKV_OK) {
      long long rows = packkv_py_mul(packkv_py_mul(arg2, arg4), arg5);
      if (packkv_py_check_buf("q", info6, packkv_py_mul(rows, p.head_dim),
                              packkv_py_dtype_size(arg7), arg7) < 0 ||
          packkv_py_check_buf("out", info9, packkv_py_mul(rows, p.head_dim), 4, -1) < 0 ||
          packkv_py_check_buf("lse", info10, rows, 4, -1) < 0 ||
          packkv_py_check_buf("workspace", info11, (long long)arg12, 1, -1) < 0)
        SWIG_fail;
    }
  }
  $action
}

/* ---- CUDA streams ---------------------------------------------------------------------------- */
%typemap(in) packkv_stream_t stream {
  void* p = NULL;
  if ($input != Py_None) {
    p = PyLong_AsVoidPtr($input);
    if (!p && PyErr_Occurred()) SWIG_fail;
  }
  $1 = (packkv_stream_t)p;
}
%typemap(default) packkv_stream_t stream {
  $1 = NULL;
}

/* ---- the caller's task runner (packkv_x_cache_set_parallel): C function and context as int
 * addresses (e.g. from ctypes, or from an engine's C extension) or None ---------------------- */
%typemap(in) packkv_x_parallel_fn fn {
  void* p = NULL;
  if ($input != Py_None) {
    p = PyLong_AsVoidPtr($input);
    if (!p && PyErr_Occurred()) SWIG_fail;
  }
  $1 = (packkv_x_parallel_fn)p;
}
%typemap(in) void* user {
  void* p = NULL;
  if ($input != Py_None) {
    p = PyLong_AsVoidPtr($input);
    if (!p && PyErr_Occurred()) SWIG_fail;
  }
  $1 = p;
}

/* ---- the API ----------------------------------------------------------------------------------- */
%include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
%include "packkv/packkv_experimental.h"

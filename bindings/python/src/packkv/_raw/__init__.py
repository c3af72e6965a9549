"""Internal: the SWIG layer of libpackkv (``packkv._raw.swig``), not part of the API.

One function per C function of include/packkv/packkv.h, named without the ``packkv_``
prefix, raising the packkv exception of a failed status. The public API (``packkv.Cache``
and the module functions) is written on top of it and may change it at any time.

What it is handed is checked before each C call: numpy arrays for their dtype, contiguity,
byte order and their size against what the call reads or writes (packkv.i); int addresses
are trusted as given, as the C API trusts its pointers.
"""
from .swig import *  # noqa: F401,F403  (the generated module's public names)

# struct_size checks. The C functions trust a struct's struct_size field (and the size argument
# of the *_params_init functions) for how many bytes they read and write; a SWIG struct object
# holds exactly sizeof(struct) bytes, so a larger size would read or write past it (heap
# corruption). Every wrapped function taking such a struct is checked here before the C call.
from . import swig as _swig  # noqa: E402
from .._errors import InvalidArgument as _InvalidArgument  # noqa: E402

_STRUCT_BYTES = {
    _swig.CacheParamsStruct: int(_swig.CACHE_PARAMS_STRUCT_SIZE),
    _swig.CacheStatsStruct: int(_swig.CACHE_STATS_STRUCT_SIZE),
    _swig.PoolParamsStruct: int(_swig.POOL_PARAMS_STRUCT_SIZE),
    _swig.PoolStatsStruct: int(_swig.POOL_STATS_STRUCT_SIZE),
}


def _check_struct_sizes(name, fn):
    is_init = name.endswith("_params_init")

    def call(*args):
        for i, a in enumerate(args):
            limit = _STRUCT_BYTES.get(type(a))
            if limit is None:
                continue
            if is_init and i == 0:
                size, what = (args[1] if len(args) > 1 else 0), "the struct_size argument"
            else:
                size, what = a.struct_size, "its struct_size field"
            if not isinstance(size, int) or size > limit:
                raise _InvalidArgument(
                    int(_swig.ERR_INVALID_ARGUMENT), f"{name}: {what} is {size!r}, but this {type(a).__name__} object holds "
                    f"{limit} bytes (the C call would read or write past it)")
        return fn(*args)

    call.__name__ = name
    call.__doc__ = fn.__doc__
    return call


for _name in [n for n in dir(_swig) if not n.startswith("_") and callable(getattr(_swig, n))
              and not isinstance(getattr(_swig, n), type)]:
    globals()[_name] = _check_struct_sizes(_name, getattr(_swig, _name))
del _name

"""Internal: the SWIG layer of libpackkv (``packkv._raw.swig``), not part of the API.

One function per C function of include/packkv/packkv.h, named without the ``packkv_``
prefix, raising the packkv exception of a failed status. The public API (``packkv.Cache``
and the module functions) is written on top of it and may change it at any time.

What it is handed is checked before each C call: numpy arrays for their dtype, contiguity,
byte order and their size against what the call reads or writes (packkv.i); int addresses
are trusted as given, as the C API trusts its pointers.
"""
from .swig import *  # noqa: F401,F403  (the generated module's public names)

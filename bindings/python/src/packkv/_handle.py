"""The life cycle shared by the classes that own a C handle (Cache, Pool): `closed`,
`with` support, a safety-net finalizer and the closed-handle check. A subclass sets
`_what` (its noun in messages), keeps its pointer in `_ptr` and defines `close()`."""

from __future__ import annotations

from ._errors import InvalidState


class _Handle:
    _what = "handle"
    _ptr = None

    @property
    def closed(self) -> bool:
        """True once close() ran."""
        return self._ptr is None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # Safety net only: close() / `with` free the handle deterministically.
        try:
            if getattr(self, "_ptr", None) is not None:
                self.close()
        except Exception:
            pass

    # A copy would share the C handle: closing (or collecting) one would free what the
    # other still uses. Copies are refused with what to do instead.
    def _no_copy(self, how: str):
        hint = (" to duplicate a sequence use Cache.fork(src_seq, dst_seq) (same cache, shared pages)"
                " or export_seq() / import_seq() (another cache)") if self._what == "cache" else ""
        raise TypeError(f"a packkv {self._what} owns a C handle and cannot be {how};{hint}".rstrip(";"))

    def __copy__(self):
        self._no_copy("copied")

    def __deepcopy__(self, memo):
        self._no_copy("deep-copied")

    def __reduce_ex__(self, protocol):
        self._no_copy("pickled")

    def __reduce__(self):
        self._no_copy("pickled")

    def __getstate__(self):
        self._no_copy("pickled")

    def _handle(self):
        ptr = self._ptr
        if ptr is None:
            raise InvalidState(2, f"the {self._what} is closed")
        return ptr

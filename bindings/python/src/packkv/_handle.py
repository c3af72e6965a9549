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

    def _handle(self):
        ptr = self._ptr
        if ptr is None:
            raise InvalidState(2, f"the {self._what} is closed")
        return ptr

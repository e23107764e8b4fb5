"""``Record``: the base of certauth's small internal value classes on the token path.

They are plain classes with ``__slots__`` and an ``__init__`` written out, compared, hashed and
shown by their slots, instead of dataclasses. Why: Python 3.11 compiles a dataclass's
``__init__``, ``__repr__``, ``__eq__`` and, frozen, ``__hash__``, ``__setattr__`` and
``__delattr__`` from source when the class is created, about 3.5 million instructions each
(2 to 3 ms on this project's CI machine), and every process that gets one token creates these
classes: a dozen of them cost it more than a sixth of what the job itself must execute at the
least (issue 19; docs/performance.md). The public value types (``Certificate``,
``Authority``, ``Token``, ``RetryPolicy``, ...) stay dataclasses.

A record is not frozen: nothing assigns to one after ``__init__`` (they are built whole and
replaced whole).
"""

from __future__ import annotations

__all__ = ["Record"]


class Record:
    """Equal when of the same type with equal slots; hashed and shown by its slots."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Record)
            and type(other) is type(self)
            and self._values() == other._values()
        )

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

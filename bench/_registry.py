"""One small registry class for every kind of named thing (protocols, datasets, feature modes, layouts)."""
from __future__ import annotations

import fnmatch
from typing import Generic, Iterator, TypeVar

from .errors import RegistryError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None):
        """Register `obj` under `name`; used bare or as a decorator. A duplicate name is an error."""
        def _add(o: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} registered twice")
            self._items[name] = o
            return o
        return _add(obj) if obj is not None else _add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self._items))}") from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

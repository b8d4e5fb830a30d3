"""Registries: the single place where a kind of plug-in (a loss, an algorithm, a shaping, a dataset reader, a
task) is named. Everything else that needs the names — the config schema's enums, the Snakefile's lists,
the label-shape catalog — reads them from here, so a new plug-in is one file that registers itself.

A registry knows the package its plug-ins live in and imports every module of it the first time it is read
(``discover``): dropping ``losses/my_loss.py`` with ``@register_loss(...)`` in it is the whole change.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, filled by the modules of ``package`` as they are imported."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._entries: dict[str, T] = {}
        self._discovered = False

    def add(self, name: str, entry: T) -> T:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@REGISTRY.register("name")`` above a class or function."""
        return lambda entry: self.add(name, entry)

    def discover(self) -> None:
        """Import every module of the package once, so their registrations have run."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(getattr(package, "__path__", [])):  # a plain module has no submodules
            importlib.import_module(f"{self.package}.{module.name}")

    def get(self, name: str) -> T:
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self.discover()
        return iter(sorted(self._entries.items()))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

"""The one registry shape: backbones, methods, dataset readers and face detectors are each a `Registry`.

Every registry has the same verbs: `register(name, entry)` (also a decorator), `get(name)` (a one-line error
naming the known entries when the name is unknown), `names()`, `info(name)`, and reads like a read-only dict
(`name in R`, `R[name]`, `sorted(R)`). An entry may be given as "package.module:attribute" and is imported
on first `get`, so that listing what exists never imports torch or a detector's runtime. A registry may
name a module whose import registers the built-in entries (`fill`), imported on first use.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from agekit.errors import AgekitError


class Registry(Mapping):
    def __init__(self, kind: str, fill: str | None = None):
        self.kind = kind
        self._fill = fill
        self._entries: dict[str, Any] = {}
        self._info: dict[str, dict] = {}

    def register(self, name: str, entry: Any = None, *, replace: bool = False, **info):
        """Add `entry` under `name` (info: e.g. description=...). Without `entry`, a decorator."""
        if entry is None:
            def decorator(obj):
                self.register(name, obj, replace=replace, **info)
                return obj
            return decorator
        if name in self._entries and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self._info[name] = dict(info)
        return entry

    def _filled(self) -> dict[str, Any]:
        if self._fill is not None:
            module, self._fill = self._fill, None
            importlib.import_module(module)
        return self._entries

    def get(self, name: str) -> Any:
        """The entry of `name` (unlike dict.get, an unknown name is an AgekitError listing the known ones)."""
        entries = self._filled()
        if name not in entries:
            raise AgekitError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(entries))}")
        entry = entries[name]
        if isinstance(entry, str) and ":" in entry:  # "module:attribute", imported on first use
            module, attribute = entry.split(":", 1)
            entry = entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def names(self) -> list[str]:
        return sorted(self._filled())

    def info(self, name: str) -> dict:
        if name not in self._filled():
            self.get(name)  # the unknown-name error
        return dict(self._info[name])

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __iter__(self):
        return iter(sorted(self._filled()))

    def __len__(self) -> int:
        return len(self._filled())

    def __contains__(self, name) -> bool:
        return name in self._filled()

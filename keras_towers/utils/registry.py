"""`Registry`: a named table of things registered under string keys.

Every extension point of keras_towers (objectives, encoders, checkpoint
formats, readers, recipes, trainers, evaluation tasks) is one `Registry`, so
they all register, list and fail the same way.

Example:

```python
from keras_towers.utils.registry import Registry

LOSSES = Registry("loss")

@LOSSES.register("zero")
def zero_loss(*args):
    return 0.0

LOSSES.get("zero")  # zero_loss
LOSSES.names()  # ["zero"]
```
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from typing import Any


class Registry:
    """Name -> entry, with one error message for unknown names.

    Args:
        kind: str. What an entry is, for error messages ("objective").
        hint: str. Appended to the unknown-name error (how to add one).
        normalize: optional function applied to names on every access
            (e.g. `str.lower` for file suffixes).
    """

    def __init__(
        self,
        kind: str,
        hint: str = "",
        normalize: Callable[[str], str] | None = None,
    ):
        self.kind = kind
        self.hint = hint
        self._normalize = normalize or (lambda name: name)
        self._entries: dict[str, Any] = {}

    def add(self, name: str, entry: Any, override: bool = True) -> Any:
        """Register `entry` under `name` and return it.

        With `override=False`, registering a different entry under a taken
        name raises instead of replacing it.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"A {self.kind} name must be a non-empty string. Received: {name!r}"
            )
        key = self._normalize(name)
        if not override and key in self._entries and self._entries[key] is not entry:
            raise ValueError(
                f"A {self.kind} named {name!r} is already registered "
                f"({_describe(self._entries[key])})."
            )
        self._entries[key] = entry
        return entry

    def register(self, name: str, override: bool = True) -> Callable:
        """Decorator form of `add`."""

        def decorator(entry):
            self.add(name, entry, override=override)
            return entry

        return decorator

    def get(self, name: str) -> Any:
        """The entry registered under `name`, or a `ValueError` listing names."""
        key = self._normalize(name) if isinstance(name, str) else name
        if key not in self._entries:
            message = (
                f"Unknown {self.kind} {name!r}. Known: "
                f"{self.names() or 'none registered yet'}."
            )
            raise ValueError(f"{message} {self.hint}".rstrip())
        return self._entries[key]

    def remove(self, name: str) -> None:
        self._entries.pop(self._normalize(name), None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._entries.items())

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _describe(entry) -> str:
    module = getattr(entry, "__module__", None)
    name = getattr(entry, "__qualname__", None) or type(entry).__name__
    return f"{module}.{name}" if module else name

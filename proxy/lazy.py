"""Module singletons (the policy cache, the limiter, the usage counter, the outbound client) built on
first use, from the settings of that moment, and built anew when a setting they depend on changes, so
`override_settings` reaches them and nothing is decided at import time."""

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """Stands for the object `build()` makes; `depends_on()` names the settings it was built from."""

    def __init__(self, build: Callable[[], T], depends_on: Callable[[], Hashable] = lambda: None) -> None:
        self._build = build
        self._depends_on = depends_on
        self._built: tuple[Hashable, T] | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        key, built = self._depends_on(), self._built
        if built is not None and built[0] == key:
            return built[1]
        with self._lock:
            if self._built is None or self._built[0] != key:
                self._built = (key, self._build())
            return self._built[1]

    def __getattr__(self, name: str):
        return getattr(self.get(), name)

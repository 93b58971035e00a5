"""Module singletons (the policy cache, the limiter, the usage counter, the outbound client) built on
first use, from the settings of that moment, and built anew when a setting they depend on changes, so
`override_settings` reaches them and nothing is decided at import time."""

import threading
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


def _no_settings() -> Hashable:
    return None


class Lazy(Generic[T]):
    """Stands for the object `build()` makes; `depends_on()` names the settings it was built from.
    Every attribute read goes through to that object (built or rebuilt first when due)."""

    def __init__(self, build: Callable[[], T], depends_on: Callable[[], Hashable] = _no_settings) -> None:
        self._build = build
        self._depends_on = depends_on
        self._built: tuple[Hashable, T] | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        """The object for the settings of this moment."""
        key, built = self._depends_on(), self._built
        if built is not None and built[0] == key:
            return built[1]
        with self._lock:
            if self._built is None or self._built[0] != key:
                self._built = (key, self._build())
            return self._built[1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def lazy(build: Callable[[], T], depends_on: Callable[[], Hashable] = _no_settings) -> T:
    """A module singleton typed as what `build()` makes: `limiter = lazy(_make_limiter, ...)` reads as a
    Limiter at every call site (`limiter.check(...)`), and is built on first use (see Lazy)."""
    # The one place the proxy object is passed off as its target: for attribute reads (all the call
    # sites do) the two are indistinguishable, since __getattr__ forwards every one of them.
    return cast(T, Lazy(build, depends_on))

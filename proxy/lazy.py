"""Module singletons (the policy cache, the limiter, the usage counter, the outbound client) built on
first use, from the settings of that moment, and built anew when a setting they depend on changes, so
`override_settings` reaches them and nothing is decided at import time."""

import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar, cast

from django.core.signals import setting_changed

T = TypeVar("T")


class Lazy(Generic[T]):
    """Stands for the object `build()` makes; `settings` names the settings it is built from. Every
    attribute read goes through to that object (built first when due).

    A change of one of those settings (Django's `setting_changed`, which `override_settings` sends) drops
    the object, so the next read builds it anew. Settings are not read on every access: this sits on
    the relay's hot path, read several times per call."""

    def __init__(self, build: Callable[[], T], settings: Iterable[str] = ()) -> None:
        self._build = build
        self._settings = frozenset(settings)
        self._built: T | None = None
        self._lock = threading.Lock()
        if self._settings:
            setting_changed.connect(self._setting_changed, weak=False)

    def _setting_changed(self, *, setting: str, **_: Any) -> None:
        if setting in self._settings:
            self._built = None

    def get(self) -> T:
        """The object for the settings of this moment."""
        built = self._built
        if built is not None:
            return built
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


def lazy(build: Callable[[], T], settings: Iterable[str] = ()) -> T:
    """A module singleton typed as what `build()` makes: `limiter = lazy(_make_limiter, ...)` reads as a
    Limiter at every call site (`limiter.check(...)`), and is built on first use (see Lazy)."""
    # The one place the proxy object is passed off as its target: for attribute reads (all the call
    # sites do) the two are indistinguishable, since __getattr__ forwards every one of them.
    return cast(T, Lazy(build, settings))

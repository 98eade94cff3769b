"""The registry: provider name -> Provider, changeable at run time; enabled ones come from settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from gentask.providers.base import Provider

if TYPE_CHECKING:
    from gentask.config import Settings


def _volcengine(settings: Settings) -> Provider:
    from gentask.providers.volcengine import VolcengineProvider
    return VolcengineProvider.from_settings(settings)


def _openai(settings: Settings) -> Provider:
    from gentask.providers.openai import OpenAIProvider
    return OpenAIProvider.from_settings(settings)


def _fake(settings: Settings) -> Provider:
    from gentask.providers.fake import FakeProvider
    return FakeProvider.from_settings(settings)


def _factories() -> dict[str, Callable[[Settings], Provider]]:
    """Each provider's constructor; its module (and its HTTP client and SDK) is imported when it is built."""
    return {"volcengine": _volcengine, "openai": _openai, "fake": _fake}


class ProviderNotEnabledError(LookupError):
    """A task names a provider this process has not enabled."""

    reason = "InvalidSpec"


class Registry:
    """Providers by name. `register` and `unregister` may be called while tasks run."""

    def __init__(self, providers: Iterable[Provider] = (),
                 lazy: Mapping[str, Callable[[], Provider]] | None = None) -> None:
        """`lazy`: providers by name, each built by its callable when a task first asks for it, so a
        worker pod imports only its task's vendor client."""
        self._providers: dict[str, Provider] = {}
        self._lazy: dict[str, Callable[[], Provider]] = dict(lazy or {})
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider, *, replace: bool = False) -> Provider | None:
        """Add a provider under its name; returns the one it replaced (replace=True) or None."""
        if provider.name in self._lazy and not replace:
            raise ValueError(f"provider {provider.name!r} is already registered; pass replace=True to swap it")
        self._lazy.pop(provider.name, None)
        old = self._providers.get(provider.name)
        if old is not None and not replace:
            raise ValueError(f"provider {provider.name!r} is already registered; pass replace=True to swap it")
        self._providers[provider.name] = provider
        return old

    def unregister(self, name: str) -> Provider | None:
        """Remove and return a provider (the caller closes it); None when it was not there (or not built)."""
        self._lazy.pop(name, None)
        return self._providers.pop(name, None)

    def get(self, name: str) -> Provider:
        """The provider of that name; ProviderNotEnabledError (an InvalidSpec) when it is not enabled."""
        provider = self._providers.get(name)
        if provider is not None:
            return provider
        build = self._lazy.pop(name, None)
        if build is None:
            raise ProviderNotEnabledError(
                f"provider {name!r} is not enabled; enabled: {', '.join(self.names()) or 'none'}")
        provider = self._providers[name] = build()
        return provider

    def names(self) -> list[str]:
        """The enabled provider names, sorted: what the catalog may route a task to."""
        return sorted({*self._providers, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._providers or name in self._lazy

    async def aclose(self) -> None:
        """Close every registered provider's connections (the registry itself stays usable)."""
        for provider in list(self._providers.values()):
            await provider.aclose()

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def registry_from_settings(settings: Settings) -> Registry:
    """A registry with every provider GENTASK_PROVIDERS enables, configured from the settings."""
    factories = _factories()
    unknown = [name for name in settings.providers if name not in factories]
    if unknown:
        raise ValueError(f"GENTASK_PROVIDERS names {', '.join(map(repr, unknown))}; "
                         f"known providers: {', '.join(sorted(factories))}")
    return Registry(lazy={name: partial(factories[name], settings) for name in dict.fromkeys(settings.providers)})

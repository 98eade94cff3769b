"""The registry: provider name -> Provider, changeable at run time; enabled ones come from settings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gentask.providers.base import Provider

if TYPE_CHECKING:
    from gentask.config import Settings


def _factories() -> dict[str, Callable[[Settings], Provider]]:
    from gentask.providers.fake import FakeProvider
    from gentask.providers.openai import OpenAIProvider
    from gentask.providers.volcengine import VolcengineProvider
    return {"volcengine": VolcengineProvider.from_settings, "openai": OpenAIProvider.from_settings,
            "fake": FakeProvider.from_settings}


class ProviderNotEnabledError(LookupError):
    """A task names a provider this process has not enabled."""

    reason = "InvalidSpec"


class Registry:
    """Providers by name. `register` and `unregister` may be called while tasks run."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._providers: dict[str, Provider] = {}
        for provider in providers:
            self.register(provider)

    def register(self, provider: Provider, *, replace: bool = False) -> Provider | None:
        """Add a provider under its name; returns the one it replaced (replace=True) or None."""
        old = self._providers.get(provider.name)
        if old is not None and not replace:
            raise ValueError(f"provider {provider.name!r} is already registered; pass replace=True to swap it")
        self._providers[provider.name] = provider
        return old

    def unregister(self, name: str) -> Provider | None:
        """Remove and return a provider (the caller closes it); None when it was not there."""
        return self._providers.pop(name, None)

    def get(self, name: str) -> Provider:
        """The provider of that name; ProviderNotEnabledError (an InvalidSpec) when it is not enabled."""
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderNotEnabledError(
                f"provider {name!r} is not enabled; enabled: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        """The enabled provider names, sorted: what the catalog may route a task to."""
        return sorted(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers

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
    return Registry(factories[name](settings) for name in dict.fromkeys(settings.providers))

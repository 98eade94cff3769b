"""The registry: enabled providers come from settings; providers come and go at run time."""

from __future__ import annotations

import pytest

from gentask.config import Settings
from gentask.domain.catalog import InvalidSpecError
from gentask.providers import GenerationResult, Registry, generate, registry_from_settings
from gentask.providers.fake import FakeProvider

from .conftest import task


async def test_only_the_providers_enabled_in_settings_are_registered(policy):
    async with registry_from_settings(Settings(providers="fake,volcengine")) as registry:
        assert registry.names() == ["fake", "volcengine"]
        with pytest.raises(InvalidSpecError, match="enabled providers .*: fake, volcengine"):
            await generate(task("text", "openai", "gpt-4"), registry=registry, policy=policy)


def test_an_unknown_provider_in_settings_is_refused_naming_the_known_ones():
    expected = "GENTASK_PROVIDERS names 'midjourney'; known providers: fake, openai, volcengine"
    with pytest.raises(ValueError, match=expected):
        registry_from_settings(Settings(providers="fake,midjourney"))


class Echo(FakeProvider):
    """A provider plugged in at run time: answers texts with the prompt."""

    async def generate(self, request) -> GenerationResult:
        return GenerationResult(provider=self.name, model=request.model.model, text=f"echo: {request.prompt}")


async def test_providers_are_registered_replaced_and_unregistered_at_run_time(policy):
    registry = Registry([FakeProvider()])
    spec = task("text", "fake", "fake-text", prompt="ping")
    assert (await generate(spec, registry=registry, policy=policy)).text.startswith("Simulated answer")

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Echo())
    old = registry.register(Echo(), replace=True)
    assert isinstance(old, FakeProvider)
    assert (await generate(spec, registry=registry, policy=policy)).text == "echo: ping"

    assert isinstance(registry.unregister("fake"), Echo)
    with pytest.raises(InvalidSpecError, match="enabled providers .*: none"):
        await generate(spec, registry=registry, policy=policy)
    assert registry.unregister("fake") is None

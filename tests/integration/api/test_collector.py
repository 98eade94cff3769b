"""The API's collector policy: full collections walk only what came since the last one, and the
thaw still reclaims reference cycles among frozen objects (gentask.api.collector)."""

from __future__ import annotations

import gc
import weakref

import pytest

from gentask.api.collector import FreezeSurvivors


class Node:
    """A small object the collector tracks, able to form a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def frozen(obj: object) -> bool:
    """The object is in the permanent generation: no collection walks it."""
    return not any(o is obj for o in gc.get_objects())


@pytest.fixture
async def policy():
    collector = FreezeSurvivors(thaw_every=0)
    thresholds = gc.get_threshold()
    collector.start()
    yield collector
    await collector.stop()
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0


async def test_what_survives_a_full_collection_is_not_walked_again(policy):
    survivor = Node()
    gc.collect()
    assert frozen(survivor)
    newcomer = Node()
    assert not frozen(newcomer)
    gc.collect()
    assert frozen(newcomer)


async def test_a_frozen_object_is_still_freed_when_nothing_refers_to_it(policy):
    task = Node()
    gc.collect()
    gone = weakref.ref(task)
    del task
    assert gone() is None


async def test_the_thaw_reclaims_a_cycle_among_frozen_objects(policy):
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is not None            # frozen: the collection does not walk the cycle
    assert policy.thaw() >= 2
    assert gone() is None


async def test_the_last_app_to_stop_restores_the_collector():
    thresholds = gc.get_threshold()
    first, second = FreezeSurvivors(thaw_every=0), FreezeSurvivors(thaw_every=0)
    first.start()
    second.start()
    assert gc.get_threshold()[2] == 3
    await first.stop()
    gc.collect()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[2] == 3   # the second app still runs
    await second.stop()
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == 0

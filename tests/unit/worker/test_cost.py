"""The worker's cost of a task: what earlier pods of it were billed (status.cost), then its own attempts."""

from __future__ import annotations

from gentask.config import load_settings
from gentask.domain.pricing import Attempt
from gentask.domain.task import GenerationTask
from gentask.providers import Registry
from gentask.worker.run import Worker

SPEC = {"type": "image", "provider": "volcengine", "model": "doubao-seedream-4-0-250828", "prompt": "p"}


def worker(**settings) -> Worker:
    return Worker(None, load_settings(**settings), Registry(), None, "pod-1")    # type: ignore[arg-type]


def test_a_result_produced_again_after_a_retry_is_charged_twice():
    """The first pod's image was billed, then the artifact store failed (EXIT_RETRY); the next pod adds its own."""
    w = worker()
    first = w._cost(GenerationTask.model_validate({"spec": SPEC}),
                    [Attempt("volcengine", "doubao-seedream-4-0-250828", True, {"images": 1})])
    assert first["cost"]["amount"] == "0.2"
    again = GenerationTask.model_validate({"spec": SPEC, "status": {"phase": "Running", **first}})
    second = w._cost(again, [Attempt("volcengine", "doubao-seedream-4-0-250828", True, {"images": 1})])
    assert second["cost"]["amount"] == "0.4" and len(second["cost"]["attempts"]) == 2
    assert second["usage"] == {"images": 2}


def test_the_worker_prices_with_gentask_prices():
    w = worker(prices='{"volcengine/doubao-seedream-4-0-250828": {"perImage": "0.15"}}')
    out = w._cost(GenerationTask.model_validate({"spec": SPEC}),
                  [Attempt("volcengine", "doubao-seedream-4-0-250828", True, {"images": 2})])
    assert out["cost"]["amount"] == "0.3"

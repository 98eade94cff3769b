"""An asynchronous vendor job survives a worker restart: the task id handed out before polling
lets a new process poll the same job, and nobody pays for a second one."""

from __future__ import annotations

import asyncio

import pytest

from gentask.domain.task import GenerationTaskStatus, ModelRef
from gentask.providers import GenerationFailed, Registry, Submitted, cancel_job, generate, registry_from_settings
from gentask.providers.fake import FakeProvider

from .conftest import task

VIDEOS = [
    ("ark", task("video", "volcengine", "doubao-seedance-1-0-pro-250528"), "POST", "/contents/generations/tasks"),
    ("visual", task("video", "volcengine", "jimeng_t2v_v30"), "POST", "Action=CVSync2AsyncSubmitTask"),
]


def submits(vendors, server: str, method: str, marker: str) -> int:
    return sum(1 for r in getattr(vendors, server).requests if r.method == method and marker in r.target)


async def run_until_killed(spec, settings, policy, polls_before_kill: int, vendors, server: str):
    """A worker that records the vendor's task id in the task status, then dies mid-poll."""
    status = GenerationTaskStatus()

    def record(submitted: Submitted) -> None:          # what the worker patches into status
        status.served_by = ModelRef(provider=submitted.provider, model=submitted.model)
        status.provider_task_id = submitted.task_id

    async with registry_from_settings(settings) as registry:
        worker = asyncio.create_task(generate(spec, registry=registry, policy=policy, on_submitted=record))
        while len(getattr(vendors, server).requests) < 1 + polls_before_kill:
            await asyncio.sleep(0.005)
        worker.cancel()                                 # the pod is gone
        with pytest.raises(asyncio.CancelledError):
            await worker
    return GenerationTaskStatus.model_validate(status.model_dump(by_alias=True))


@pytest.mark.parametrize("server, spec, method, marker", VIDEOS, ids=[v[0] for v in VIDEOS])
async def test_a_restarted_worker_resumes_the_same_vendor_job(vendors, settings, policy, server, spec, method, marker):
    getattr(vendors, server).job_steps = 6
    slow = policy.__class__(**{**policy.__dict__, "poll_interval": 0.02})
    status = await run_until_killed(spec, settings, slow, 2, vendors, server)
    assert status.provider_task_id and submits(vendors, server, method, marker) == 1

    async with registry_from_settings(settings) as fresh:          # a new process
        result = await generate(spec, registry=fresh, policy=policy, resume=Submitted.from_status(status))
    assert result.provider_task_id == status.provider_task_id
    assert result.video.url
    assert submits(vendors, server, method, marker) == 1            # paid once


async def test_openai_video_resumes_with_the_recorded_id(vendors, registry, policy):
    from gentask.domain.catalog import lookup
    from gentask.providers import GenerationRequest
    entry = lookup("openai", "sora-2")
    request = GenerationRequest(entry, "waves", entry.defaults)
    video_id = await registry.get("openai").submit(request)
    async with registry_from_settings(vendors.settings(ai_timeout=2)) as fresh:
        status = await fresh.get("openai").poll(request, video_id)
        while not status.state.done:
            status = await fresh.get("openai").poll(request, video_id)
    assert status.result.video.data[4:8] == b"ftyp"
    assert vendors.openai.count("POST", "/videos") == 1


async def test_a_fake_video_job_resumes_in_another_process(policy):
    spec = task("video", "fake", "fake-video", prompt="a comet [latency:0.3s]")
    first = FakeProvider()
    seen: list[Submitted] = []
    worker = asyncio.create_task(generate(spec, registry=Registry([first]), policy=policy, on_submitted=seen.append))
    while not seen:
        await asyncio.sleep(0.005)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    second = FakeProvider()                          # knows nothing of the first one's jobs
    result = await generate(spec, registry=Registry([second]), policy=policy, resume=seen[0])
    assert result.provider_task_id == seen[0].task_id and result.video.data[4:8] == b"ftyp"
    assert (first.submits, second.submits) == (1, 0)


async def test_the_task_id_is_handed_out_before_the_first_poll(vendors, registry, policy):
    order: list[str] = []

    async def record(submitted: Submitted) -> None:
        order.append(f"recorded, {vendors.ark.count('GET', '/tasks/')} polls so far")

    await generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528"), registry=registry, policy=policy,
                   on_submitted=record)
    assert order == ["recorded, 0 polls so far"]


async def test_a_job_the_vendor_no_longer_knows_fails_instead_of_paying_again(vendors, registry, policy):
    spec = task("video", "volcengine", "doubao-seedance-1-0-pro-250528", retries=3)
    gone = Submitted("volcengine", "doubao-seedance-1-0-pro-250528", "cgt-20260101000000-99999")
    with pytest.raises(GenerationFailed) as caught:
        await generate(spec, registry=registry, policy=policy, resume=gone)
    assert caught.value.reason == "ProviderError" and "does not know task" in str(caught.value)
    assert vendors.ark.count("POST") == 0


async def test_the_deadline_fails_the_task_and_cancels_the_vendor_job(vendors, registry, policy):
    vendors.ark.job_steps = 1000
    with pytest.raises(GenerationFailed) as caught:
        await generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528"), registry=registry,
                       policy=policy, deadline=0.2)
    assert caught.value.reason == "DeadlineExceeded"
    assert caught.value.failures[-1].model == "doubao-seedance-1-0-pro-250528"
    assert vendors.ark.count("DELETE", "/contents/generations/tasks/") == 1
    assert all(t["status"] == "cancelled" for t in vendors.ark.tasks.values())     # stopped, or deleted


async def test_cancel_job_stops_a_recorded_job(vendors, registry, policy):
    vendors.ark.job_steps = 1000
    seen: list[Submitted] = []
    worker = asyncio.create_task(generate(task("video", "volcengine", "doubao-seedance-1-0-pro-250528"),
                                          registry=registry, policy=policy, on_submitted=seen.append))
    while not seen:
        await asyncio.sleep(0.005)
    worker.cancel()
    await cancel_job(seen[0], registry=registry)
    assert vendors.ark.tasks[seen[0].task_id]["status"] == "cancelled"

"""The "fake" provider: a built-in simulator that needs no key, for demos, benchmarks and fault drills.

Models:
    fake-image   a PNG drawn from the prompt at the requested size (n of them)
    fake-video   an H.264 MP4 (aspectRatio, duration), made by an asynchronous job: submit + poll
    fake-text    deterministic text from the prompt, at most maxTokens words (a word is a token)

Latency and failures are driven from the task itself, by directives in the prompt (the params
of a GenerationTask are typed, the prompt is free text, so every path can be drilled with
`kubectl apply` alone). Directives are removed from the prompt before it is used:

    [latency:2s]             answer after 2 s (a duration: 500ms, 2s, 1m); video: the job runs 2 s
    [fail:KIND]              every call fails with KIND
    [fail-first:N:KIND]      the first N calls fail with KIND, later ones succeed; counted in this
                             process, per model and prompt (a restarted worker counts afresh)
    [fail-rate:P:KIND]       each call fails with KIND with probability P (0..1)
    [job-fail:KIND]          video: the job is accepted, then ends failed with KIND

KIND is one of rate_limited, overloaded, server_error, timeout, unreachable, content_rejected,
bad_request, auth, quota, model_unavailable. `timeout` makes the call hang until the caller's
timeout (AI_TIMEOUT) gives up. For video, [fail…] applies to the submit call.

Example: `prompt: "a red fox [latency:1s] [fail-first:2:rate_limited]"` succeeds on the third
try after two ProviderRateLimited errors, if spec.retries is at least 2.

Video job ids carry their start time and a digest of the request (`fake-<ms>-<digest>`), so any
process can poll a job another process submitted: a restarted worker resumes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from gentask.config import Settings, parse_duration
from gentask.providers.base import GenerationRequest, GenerationResult, JobState, JobStatus, Media, Provider
from gentask.providers.errors import (
    AuthenticationError,
    BadRequestError,
    ContentRejectedError,
    ModelUnavailableError,
    OverloadedError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitedError,
    UnreachableError,
)

FAULTS: dict[str, tuple[type[ProviderError], int | None, str]] = {
    "rate_limited": (RateLimitedError, 429, "simulated rate limit"),
    "overloaded": (OverloadedError, 503, "simulated overload"),
    "server_error": (OverloadedError, 500, "simulated internal server error"),
    "timeout": (ProviderTimeoutError, None, "simulated timeout"),
    "unreachable": (UnreachableError, None, "simulated connection failure"),
    "content_rejected": (ContentRejectedError, 400, "simulated content rejection"),
    "bad_request": (BadRequestError, 400, "simulated bad request"),
    "auth": (AuthenticationError, 401, "simulated authentication failure"),
    "quota": (QuotaExceededError, 429, "simulated quota exhausted"),
    "model_unavailable": (ModelUnavailableError, 404, "simulated model unavailable"),
}
DIRECTIVE = re.compile(r"\[(latency|fail|fail-first|fail-rate|job-fail):([^\]]*)\]")
WORDS = ("the", "quiet", "river", "light", "carries", "a", "small", "story", "of", "morning", "across", "green",
         "fields", "and", "every", "stone", "remembers", "warm", "wind", "while", "patient", "clouds", "drift",
         "over", "old", "roofs", "where", "birds", "gather", "to", "sing", "about", "distant", "hills")


@dataclass(frozen=True)
class Directives:
    """The fault-drill directives of one prompt (see the module docstring), parsed."""

    prompt: str                              # the prompt without directives
    latency: float = 0.0
    fail: str | None = None
    fail_first: tuple[int, str] | None = None
    fail_rate: tuple[float, str] | None = None
    job_fail: str | None = None


def _kind(value: str, directive: str) -> str:
    if value not in FAULTS:
        raise BadRequestError(f"prompt directive [{directive}]: failure kind {value!r} is not accepted; "
                              f"accepted kinds: {', '.join(FAULTS)}", provider="fake")
    return value


def parse_directives(prompt: str) -> Directives:
    """The directives in a prompt; BadRequestError naming a malformed one and what is accepted."""
    found: dict[str, Any] = {}
    for match in DIRECTIVE.finditer(prompt):
        name, arg = match.group(1), match.group(2).strip()
        text = f"{name}:{arg}"
        try:
            if name == "latency":
                found["latency"] = parse_duration(arg)
            elif name in ("fail", "job-fail"):
                found[name.replace("-", "_")] = _kind(arg, text)
            else:
                count, _, kind = arg.partition(":")
                number: float = int(count) if name == "fail-first" else float(count)
                if number < 0 or (name == "fail-rate" and number > 1):
                    raise ValueError(count)
                found[name.replace("-", "_")] = (number, _kind(kind, text))
        except ValueError:
            accepted = {"latency": "a duration such as 500ms, 2s, 1m", "fail-first": "[fail-first:N:KIND], N >= 0",
                        "fail-rate": "[fail-rate:P:KIND], 0 <= P <= 1"}.get(name, "")
            raise BadRequestError(f"prompt directive [{text}] is not accepted; expected {accepted}",
                                  provider="fake") from None
    clean = re.sub(r"\s{2,}", " ", DIRECTIVE.sub("", prompt)).strip()
    return Directives(prompt=clean or prompt, **found)


class FakeProvider(Provider):
    """The "fake" provider: generates media locally and obeys the prompt's directives."""

    name = "fake"

    def __init__(self, *, timeout: float = 120.0, rng: random.Random | None = None) -> None:
        self.timeout = timeout
        self.submits = 0                    # vendor jobs started, for drills and tests
        self.calls = 0
        self._failed: dict[tuple[str, str], int] = {}
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings) -> FakeProvider:
        """A simulator whose `timeout` directive outlasts AI_TIMEOUT, as a hung vendor would."""
        return cls(timeout=settings.ai_timeout)

    def _error(self, kind: str, request: GenerationRequest) -> ProviderError:
        cls, status, message = FAULTS[kind]
        return cls(message, provider=self.name, model=request.model.model, code=f"Fake.{kind}", status_code=status,
                   request_id=f"fake-{self.calls}")

    async def _enter(self, request: GenerationRequest, *, wait: bool = True) -> Directives:
        """Count the call, wait the latency, raise the injected failure if any."""
        self.calls += 1
        d = parse_directives(request.prompt)
        kind = d.fail
        if kind is None and d.fail_first is not None:
            key = (request.model.model, request.prompt)
            if self._failed.get(key, 0) < d.fail_first[0]:
                self._failed[key] = self._failed.get(key, 0) + 1
                kind = d.fail_first[1]
        if kind is None and d.fail_rate is not None and self._rng.random() < d.fail_rate[0]:
            kind = d.fail_rate[1]
        if kind == "timeout":
            await asyncio.sleep(self.timeout + 1)     # the caller's timeout ends this first
        if wait and d.latency:
            await asyncio.sleep(d.latency)
        if kind is not None:
            raise self._error(kind, request)
        return d

    def _result(self, request: GenerationRequest, **kw: Any) -> GenerationResult:
        return GenerationResult(provider=self.name, model=request.model.model, request_id=f"fake-{self.calls}", **kw)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """A PNG (n of them) or a deterministic text, after the prompt's latency and failures."""
        d = await self._enter(request)
        if request.type.value == "image":
            width, height = (int(x) for x in request.param("size").split("x"))
            seed = request.param("seed")
            n = request.param("n") or 1
            from gentask.providers import media  # here: a text task draws nothing (a worker pays every import)
            images = [Media("image/png", data=media.png(width, height, d.prompt, seed=(seed or 0) + i))
                      for i in range(n)]
            return self._result(request, images=images, usage={"generated_images": n})
        if request.type.value == "text":
            text, finish = fake_text(d.prompt, request.param("max_tokens"), request.param("seed"))
            words = len(text.split())
            return self._result(request, text=text, finish_reason=finish,
                                usage={"prompt_tokens": len(d.prompt.split()), "completion_tokens": words,
                                       "total_tokens": len(d.prompt.split()) + words})
        raise self.unsupported(request, "generate")

    def _digest(self, request: GenerationRequest) -> str:
        params = sorted((k, str(v)) for k, v in request.params.items())
        return hashlib.sha256(f"{request.model.model}|{request.prompt}|{params}".encode()).hexdigest()[:12]

    async def submit(self, request: GenerationRequest) -> str:
        """Start a video job; the id encodes its start and request, so any process can poll it."""
        if request.type.value != "video":
            raise self.unsupported(request, "submit")
        await self._enter(request, wait=False)
        self.submits += 1
        return f"fake-{int(time.time() * 1000)}-{self._digest(request)}"

    async def poll(self, request: GenerationRequest, task_id: str) -> JobStatus:
        """Running until the prompt's latency has passed since submit, then the MP4 (or the job-fail error)."""
        match = re.fullmatch(r"fake-(\d+)-([0-9a-f]{12})", task_id)
        if not match or match.group(2) != self._digest(request):
            return JobStatus(JobState.FAILED, error=ProviderError(
                f"no fake job {task_id!r} for this request", provider=self.name, model=request.model.model,
                code="not_found"))
        d = parse_directives(request.prompt)
        elapsed = time.time() - int(match.group(1)) / 1000
        if elapsed < d.latency:
            return JobStatus(JobState.RUNNING, progress=min(99, int(100 * elapsed / d.latency)))
        if d.job_fail:
            return JobStatus(JobState.FAILED, error=self._error(d.job_fail, request))
        seconds = int(request.param("duration"))
        from gentask.providers import media
        data = media.mp4(d.prompt, aspect_ratio=request.param("aspect_ratio"), seconds=seconds,
                         seed=request.param("seed"))
        return JobStatus(JobState.SUCCEEDED, 100, self._result(
            request, video=Media("video/mp4", data=data), provider_task_id=task_id,
            usage={"duration_seconds": seconds}))

    async def cancel(self, request: GenerationRequest, task_id: str) -> None:
        """Nothing to stop: a fake job is computed when it is polled."""
        return None


def fake_text(prompt: str, max_tokens: int, seed: int | None = None) -> tuple[str, str]:
    """Deterministic text for a prompt: (text, finish_reason "stop" or "length")."""
    rng = random.Random(hashlib.sha256(f"{prompt}\x00{seed or 0}".encode()).digest())
    words = ["Simulated", "answer", "to:"] + prompt.split()[:20] + ["—"]
    words += [rng.choice(WORDS) for _ in range(40 + rng.randrange(40))]
    if len(words) > max_tokens:
        return " ".join(words[:max_tokens]), "length"
    return " ".join(words) + ".", "stop"

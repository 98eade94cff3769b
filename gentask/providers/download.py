"""Fetching a produced file from the vendor's URL, so the worker can keep a copy before it expires.

Vendor HTTP lives in gentask.providers; the worker calls `fetch(media)` and gets bytes or a
ProviderError of the usual taxonomy (retried by the same policy as any vendor call).
"""

from __future__ import annotations

from gentask.providers.base import Media
from gentask.providers.errors import (
    BadRequestError,
    ProviderError,
    ProviderTimeoutError,
    UnreachableError,
    error_class_for_status,
)
from gentask.providers.retry import RetryPolicy, call_with_retries

MAX_BYTES = 512 * 2**20


async def _get(url: str, timeout: float, max_bytes: int) -> bytes:
    import httpx  # here, not at the top: a worker whose provider answers inline never loads it

    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            async with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    cls = error_class_for_status(response.status_code)
                    raise cls(f"downloading the result failed with HTTP {response.status_code}",
                              status_code=response.status_code)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise BadRequestError(f"the result is larger than {max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
    except httpx.TimeoutException as exc:
        raise ProviderTimeoutError(f"downloading the result timed out after {timeout:.0f}s") from exc
    except httpx.HTTPError as exc:
        raise UnreachableError(f"downloading the result failed: {type(exc).__name__}") from exc


async def fetch(media: Media, *, policy: RetryPolicy, provider: str, model: str,
                max_bytes: int = MAX_BYTES) -> bytes:
    """The media's bytes: as returned inline, or downloaded from its URL with retries."""
    if media.data is not None:
        return media.data
    url = media.url
    if not url:
        raise ProviderError("the vendor returned neither data nor a URL", provider=provider, model=model)
    data, _ = await call_with_retries(lambda: _get(url, policy.timeout, max_bytes), policy,
                                      provider=provider, model=model)
    return data

"""`gentask provider ...`: check a key, see the catalog.

    gentask provider try --provider volcengine --model doubao-seedream-3-0-t2i-250415 \\
        --prompt "a kitten playing in a garden" --out ./out [--param size=1280x720 ...]
    gentask provider models [--provider P] [--type image|video|text]

`try` runs one generation with the configured credentials (ARK_API_KEY, VOLCENGINE_ACCESS_KEY,
VOLCENGINE_SECRET_KEY, OPENAI_API_KEY; base URLs from ARK_BASE_URL, VOLCENGINE_VISUAL_BASE_URL,
OPENAI_BASE_URL), saves what comes back into --out (images, video, text, and result.json with
who served it, usage and request ids) and prints where. Exit status: 0 saved, 1 the provider
failed (the reason word and the vendor's message are printed), 2 bad arguments or settings.
The "fake" provider needs no key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from gentask.config import SettingsError, load_settings
from gentask.domain.catalog import MODELS, InvalidSpecError, lookup, models_of
from gentask.domain.names import to_camel
from gentask.domain.task import GenerationTaskSpec, Params, TaskType
from gentask.logs import setup_logging
from gentask.providers.base import GenerationResult, Media
from gentask.providers.registry import registry_from_settings
from gentask.providers.retry import RetryPolicy
from gentask.providers.runner import GenerationFailed, Progress, generate

EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gentask provider", description="Try a provider, list the catalog.")
    sub = parser.add_subparsers(dest="command", required=True)
    try_ = sub.add_parser("try", help="one generation against the configured vendor, saved to a folder")
    try_.add_argument("--provider", required=True, help="volcengine | openai | fake")
    try_.add_argument("--model", required=True, help="a model of the catalog (gentask provider models)")
    try_.add_argument("--prompt", required=True)
    try_.add_argument("--out", required=True, type=Path, help="folder for the files (created)")
    try_.add_argument("--type", choices=[t.value for t in TaskType], help="default: the model's type")
    try_.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="a task parameter, e.g. size=1024x1024, responseFormat=b64_json, aspectRatio=16:9, "
                           "duration=5, maxTokens=200, temperature=0.2 (repeatable)")
    try_.add_argument("--retries", type=int, default=0, help="retries on retryable errors (default 0)")
    try_.add_argument("--poll-interval", type=float, default=2.0, help="seconds between polls of a video job")
    models = sub.add_parser("models", help="list the catalog")
    models.add_argument("--provider")
    models.add_argument("--type", choices=[t.value for t in TaskType])
    return parser


def _params(pairs: list[str]) -> dict[str, str]:
    names = {to_camel(n): to_camel(n) for n in Params.model_fields} | {n: to_camel(n) for n in Params.model_fields}
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--param {pair!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(sorted(to_camel(n) for n in Params.model_fields))}")
        out[names[name]] = value
    return out


def _spec(args: argparse.Namespace) -> GenerationTaskSpec:
    entry = lookup(args.provider, args.model)
    type_ = args.type or (entry.type.value if entry else None)
    if type_ is None:
        known = ", ".join(models_of(args.provider, include_retired=True)) or "none (unknown provider)"
        raise SystemExit(f"--model {args.model!r} is not in the catalog for provider {args.provider!r}; "
                         f"its models: {known}")
    try:
        return GenerationTaskSpec(type=type_, provider=args.provider, model=args.model, prompt=args.prompt,
                                  params=_params(args.param), retries=args.retries)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}={e.get('input')!r}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"invalid task: {problems}") from None


def _progress(event: Progress) -> None:
    where = f"{event.provider}/{event.model}"
    job = f" job {event.task_id}" if event.task_id else ""
    percent = f" {event.percent}%" if event.percent is not None else ""
    note = f": {event.message}" if event.message else ""
    print(f"[{event.elapsed:6.1f}s] {where}{job} {event.state}{percent}{note}", file=sys.stderr, flush=True)


async def _bytes_of(item: Media, timeout: float) -> bytes:
    if item.data is not None:
        return item.data
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
        response = await client.get(item.url or "")
        response.raise_for_status()
        return response.content


async def save(result: GenerationResult, out: Path, timeout: float) -> list[Path]:
    """Write the result's files and result.json into `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    media = [(f"image-{i + 1}", m) for i, m in enumerate(result.images)]
    if result.video is not None:
        media.append(("video", result.video))
    files = []
    for stem, item in media:
        data = await _bytes_of(item, timeout)
        path = out / (stem + (EXTENSIONS.get(item.mime_type) or mimetypes.guess_extension(item.mime_type) or ".bin"))
        path.write_bytes(data)
        written.append(path)
        files.append({"file": path.name, "mimeType": item.mime_type, "sizeBytes": len(data), "url": item.url,
                      "urlExpiresAt": item.url_expires_at.isoformat() if item.url_expires_at else None})
    if result.text is not None:
        path = out / "text.txt"
        path.write_text(result.text, encoding="utf-8")
        written.append(path)
    summary: dict[str, Any] = {
        "servedBy": result.served_by.model_dump(), "requestID": result.request_id,
        "providerTaskID": result.provider_task_id, "attempts": result.attempts, "finishReason": result.finish_reason,
        "usage": result.usage, "files": files,
        "providerFailures": [f.model_dump() for f in result.failures]}
    path = out / "result.json"
    path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.append(path)
    return written


async def _try(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"gentask provider try: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings, stream=sys.stderr)
    spec = _spec(args)
    policy = RetryPolicy.from_settings(settings, poll_interval=args.poll_interval)
    registry = registry_from_settings(settings.model_copy(update={"providers": [args.provider]}))
    async with registry:
        try:
            result = await generate(spec, registry=registry, policy=policy, on_progress=_progress)
        except InvalidSpecError as exc:
            print(f"gentask provider try: {exc.reason}: {exc}", file=sys.stderr)
            return 2
        except GenerationFailed as exc:
            print(f"gentask provider try: {exc.reason}: {exc}", file=sys.stderr)
            return 1
    try:
        paths = await save(result, args.out, settings.ai_timeout)
    except httpx.HTTPError as exc:
        print(f"gentask provider try: the result came back but downloading it failed: {type(exc).__name__}",
              file=sys.stderr)
        return 1
    print(f"served by {result.provider}/{result.model} in {result.attempts} attempt(s)")
    for path in paths:
        print(f"saved {path} ({path.stat().st_size} bytes)")
    return 0


def _models(args: argparse.Namespace) -> int:
    rows = [m for m in MODELS if (not args.provider or m.provider == args.provider)
            and (not args.type or m.type.value == args.type)]
    for m in rows:
        status = f"retired {m.retired}, use {m.successor}" if m.retired else "available"
        params = ", ".join(f"{to_camel(n)}: {r.accepted}" for n, r in m.params.items())
        print(f"{m.provider:<11} {m.model:<34} {m.type.value:<6} {status}\n{'':<12}{params}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`gentask provider try|models`; the exit code: 0 done, 1 the generation failed, 2 bad usage or settings."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            return _models(args)
        return asyncio.run(_try(args))
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"gentask provider {args.command}: {exc.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

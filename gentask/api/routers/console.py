"""The web console (static files under /console, `/` redirects there) and the two routes it needs
beside the old server's: who the key is (`/me`) and a task's timeline (conditions and Events).

The console is three files shipped in the package (gentask/api/console), no build step and no
JavaScript library. They are served with a strict Content-Security-Policy: scripts and styles
from this origin only (no inline script), images and videos from this origin and from the origin
of the signed artifact links (GENTASK_API_PUBLIC_URL), requests to this origin only, no forms
posted anywhere, no framing. See docs/console.md.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from gentask.api.deps import CallerDep, SettingsDep, TasksDep
from gentask.api.errors import NotFound
from gentask.api.routers.tasks import answer, error_responses
from gentask.api.schemas import Envelope
from gentask.api.timeline import TimelineView, timeline

router = APIRouter(prefix="/api/v1/ai", tags=["console"])
pages = APIRouter(include_in_schema=False)

FILES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
         "console.css": "text/css; charset=utf-8"}


class Me(BaseModel):
    """Who the presented API key is."""

    user_id: str | None = Field(description="the key's user; null when authentication is off")
    admin: bool = Field(description="the key may see and act for every user")


@router.get("/me", response_model=Envelope[Me], responses=error_responses(401, 429),
            summary="Who the API key is")
async def me(caller: CallerDep) -> Response:
    """The user the key belongs to, and whether it is an admin's (which sees every user's tasks).
    401 without a key or with an unknown one: the console's sign-in asks this first."""
    return answer(Envelope[Me](success=True, data=Me(user_id=caller.user_id, admin=caller.admin), message="ok"))


@router.get("/task/{task_id}/timeline", response_model=Envelope[TimelineView],
            responses=error_responses(401, 404, 422, 429, 503), summary="A task's conditions and Events")
async def get_timeline(task_id: str, caller: CallerDep, tasks: TasksDep) -> Response:
    """What happened to a task: for a live task the resource's `status.conditions` and the
    Kubernetes Events about it (oldest first); for a task only the history still has (its
    resource was removed by its TTL), the times it kept. Another user's task is 404, as on the
    result endpoint."""
    found = await tasks.find(caller, task_id)
    return answer(Envelope[TimelineView](success=True, data=await timeline(tasks, found), message="ok"))


# --- the static console -----------------------------------------------------------------------


@cache
def _file(name: str) -> bytes:
    return (resources.files("gentask.api") / "console" / name).read_bytes()


def _origin(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def content_security_policy(public_url: str | None) -> str:
    """The console's CSP: this origin only, plus the signed links' origin for images and videos."""
    media = " ".join(x for x in ("'self'", _origin(public_url)) if x)
    return "; ".join((
        "default-src 'none'", "script-src 'self'", "style-src 'self'", f"img-src {media}",
        f"media-src {media}", "connect-src 'self'", "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'"))


def _headers(settings_public_url: str | None) -> dict[str, str]:
    return {"Content-Security-Policy": content_security_policy(settings_public_url),
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-cache"}


@pages.get("/")
async def root() -> RedirectResponse:
    """The console is the API's front page."""
    return RedirectResponse("console/", status_code=307)


@pages.get("/console")
async def console_bare() -> RedirectResponse:
    """/console/ (its files are linked relative to it)."""
    return RedirectResponse("console/", status_code=307)


@pages.get("/console/")
async def console_index(settings: SettingsDep) -> Response:
    """The console's page."""
    return Response(_file("index.html"), media_type=FILES["index.html"], headers=_headers(settings.api_public_url))


@pages.get("/console/{name}")
async def console_file(name: str, settings: SettingsDep) -> Response:
    """The console's script and style sheet."""
    if name not in FILES:
        raise NotFound(f"no such console file {name[:100]!r}")
    return Response(_file(name), media_type=FILES[name], headers=_headers(settings.api_public_url))

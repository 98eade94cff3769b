"""What a download says about its file: the allowlisted types inline, every other one as an attachment."""

from __future__ import annotations

import pytest

from gentask.api.routers.tasks import artifact_headers

SAFE = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


@pytest.mark.parametrize("stored,served", [
    ("image/png", "image/png"), ("image/jpeg", "image/jpeg"), ("image/webp", "image/webp"),
    ("image/gif", "image/gif"), ("video/mp4", "video/mp4"), ("IMAGE/PNG", "image/png"),
    ("text/plain", "text/plain; charset=utf-8"), ("text/plain; charset=latin-1", "text/plain; charset=utf-8"),
])
def test_allowlisted_types_are_served_inline_as_stored(stored, served):
    media, headers = artifact_headers(stored, {"artifact": "u/1/image-0.png"}, "image-0.png")
    assert media == served and headers == {**SAFE, "Content-Disposition": 'inline; filename="image-0.png"'}


@pytest.mark.parametrize("stored", ["text/html", "image/svg+xml", "application/javascript", "text/xml",
                                    "application/pdf", None, ""])
def test_every_other_type_is_an_octet_stream_attachment(stored):
    media, headers = artifact_headers(stored, {"artifact": "u/1/page.html"}, "page.html")
    assert media == "application/octet-stream"
    assert headers == {**SAFE, "Content-Disposition": 'attachment; filename="page.html"'}


def test_the_file_name_in_the_header_is_the_stored_one_made_safe():
    _, headers = artifact_headers("image/png", {"artifact": 'u/1/a "b";\r\nc.png'}, "x.png")
    assert headers["Content-Disposition"] == 'inline; filename="a__b____c.png"'

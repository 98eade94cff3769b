"""The console's policy and the timeline's reading of Events, without a cluster."""

from __future__ import annotations

from gentask.api.routers.console import content_security_policy
from gentask.api.timeline import event_view


def directives(policy: str) -> dict[str, str]:
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


def test_the_policy_allows_this_origin_only_and_the_links_origin_for_media():
    plain = directives(content_security_policy(None))
    assert plain["default-src"] == "'none'" and plain["script-src"] == "'self'" and plain["style-src"] == "'self'"
    assert plain["img-src"] == plain["media-src"] == "'self'" and plain["connect-src"] == "'self'"
    assert plain["form-action"] == "'none'" and plain["frame-ancestors"] == "'none'"
    public = directives(content_security_policy("https://gentask.example.com/prefix/"))
    assert public["img-src"] == public["media-src"] == "'self' https://gentask.example.com"
    assert public["script-src"] == "'self'" and public["connect-src"] == "'self'"     # scripts never from elsewhere
    assert directives(content_security_policy("javascript:alert(1)"))["img-src"] == "'self'"


def test_an_event_reads_either_timestamp_and_its_reporter():
    old = event_view({"type": "Warning", "reason": "Retrying", "message": "rate limited", "count": 3,
                      "firstTimestamp": "2026-12-01T10:00:00Z", "lastTimestamp": "2026-12-01T10:00:09Z",
                      "source": {"component": "gentask-operator"}})
    assert old is not None and old.count == 3 and old.source == "gentask-operator"
    assert old.last_time is not None and old.last_time.second == 9
    new = event_view({"reason": "Started", "eventTime": "2026-12-01T10:00:01.000000Z", "reportingComponent": "worker"})
    assert new is not None and new.type == "Normal" and new.first_time == new.last_time and new.source == "worker"
    assert event_view({"reason": "Odd", "lastTimestamp": "not a time"}) is None

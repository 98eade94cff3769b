"""forget(uid): a task its user deleted leaves the history, its record stays."""

from __future__ import annotations

from gentask.storage import TaskMirror


def _task(uid: str, name: str, rv: int, phase: str = "Running") -> dict:
    return {"metadata": {"uid": uid, "name": name, "namespace": "ns", "resourceVersion": str(rv),
                         "creationTimestamp": "2026-11-27T10:00:00Z", "generation": 1},
            "spec": {"type": "text", "provider": "fake", "model": "fake-text", "prompt": "p", "userID": "alice"},
            "status": {"phase": phase}}


def test_forget_hides_the_record_for_good(db):
    mirror = TaskMirror(db)
    mirror.ensure_indexes()
    mirror.upsert(_task("u1", "t1", 10))
    assert mirror.forget("u1") is True
    assert mirror.get("u1") is None and mirror.get_by_name("ns", "t1") is None
    assert mirror.list(user_id="alice", include_deleted=True) == ([], 0)
    mirror.upsert(_task("u1", "t1", 20, "Succeeded"))          # a late status change does not bring it back
    assert mirror.get("u1") is None and mirror.list(user_id="alice", include_deleted=True)[1] == 0
    assert db.tasks.find_one({"_id": "u1"})["deleted"] is True  # the record itself stays
    assert mirror.forget("u1") is False


def test_forget_before_the_first_write_still_hides_it(db):
    mirror = TaskMirror(db)
    mirror.ensure_indexes()
    assert mirror.forget("u2") is False
    mirror.upsert(_task("u2", "t2", 5))
    assert mirror.get("u2") is None and mirror.list(include_deleted=True)[1] == 0

"""The artifact store on the real FerretDB: GridFS bytes, names that are stored once."""

from __future__ import annotations

import hashlib
import os
import re
import threading

import pytest

from gentask.storage import ArtifactRef, ArtifactStore

PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(600_000)  # more than two GridFS chunks of 255 KiB


@pytest.fixture
def store(db) -> ArtifactStore:
    s = ArtifactStore(db)
    s.ensure_indexes()
    return s


def test_put_then_open_streams_the_same_bytes(store):
    ref = store.put("uid-1/1/image-0.png", PNG, mime_type="image/png", task_uid="uid-1", metadata={"width": 512})
    assert ref == ArtifactRef("uid-1/1/image-0.png", hashlib.sha256(PNG).hexdigest(), len(PNG), "image/png")

    with store.open("uid-1/1/image-0.png") as stream:
        assert (stream.mime_type, stream.size_bytes, stream.sha256) == ("image/png", len(PNG), ref.sha256)
        chunks = list(stream)
    assert len(chunks) == 3 and all(chunks)
    assert b"".join(chunks) == PNG
    assert store.open("uid-1/1/image-0.png").read() == PNG


def test_open_of_an_unknown_name_is_none(store):
    assert store.open("no/such/artifact.png") is None


def test_put_is_idempotent_by_name(store, db):
    first = store.put("uid-1/1/image-0.png", PNG, mime_type="image/png", task_uid="uid-1")
    again = store.put("uid-1/1/image-0.png", b"a second attempt drew another picture", mime_type="image/png",
                      task_uid="uid-1")
    assert again == first
    assert store.open("uid-1/1/image-0.png").read() == PNG
    assert db["artifacts.files"].count_documents({"filename": "uid-1/1/image-0.png"}) == 1


def test_two_workers_storing_one_name_at_once_keep_one_copy(store, db):
    """A Job pod started twice for the same attempt: both upload, one copy stays."""
    bodies = [os.urandom(300_000) for _ in range(4)]
    refs: list[ArtifactRef] = []
    barrier = threading.Barrier(len(bodies))

    def worker(body: bytes) -> None:
        barrier.wait()
        refs.append(store.put("uid-2/1/video.mp4", body, mime_type="video/mp4", task_uid="uid-2"))

    threads = [threading.Thread(target=worker, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(refs) == 4 and len(set(refs)) == 1
    stored = store.open("uid-2/1/video.mp4").read()
    assert hashlib.sha256(stored).hexdigest() == refs[0].sha256 and stored in bodies
    assert db["artifacts.files"].count_documents({"filename": "uid-2/1/video.mp4"}) == 1
    assert db["artifacts.chunks"].count_documents({}) == 2


def test_list_and_delete_per_task(store, db):
    store.put("a/1/image-1.png", b"one", mime_type="image/png", task_uid="a")
    store.put("a/1/image-0.png", b"zero", mime_type="image/png", task_uid="a")
    store.put("b/1/out.txt", b"text", mime_type="text/plain", task_uid="b")
    assert [r.name for r in store.list_for_task("a")] == ["a/1/image-0.png", "a/1/image-1.png"]
    assert store.list_for_task("a")[0].size_bytes == 4

    assert store.delete_for_task("a") == 2
    assert store.list_for_task("a") == [] and store.open("a/1/image-0.png") is None
    assert store.open("b/1/out.txt").read() == b"text"
    assert db["artifacts.files"].count_documents({}) == 1 and db["artifacts.chunks"].count_documents({}) == 1
    assert store.delete_for_task("a") == 0
    # a name freed by deletion can be stored again
    store.put("a/1/image-0.png", b"redo", mime_type="image/png", task_uid="a")
    assert store.open("a/1/image-0.png").read() == b"redo"


def test_a_large_artifact_round_trips(store):
    video = os.urandom(5 * 1024 * 1024 + 123)
    ref = store.put("uid-3/1/video.mp4", video, mime_type="video/mp4", task_uid="uid-3")
    assert ref.size_bytes == len(video)
    stream = store.open("uid-3/1/video.mp4")
    digest, size = hashlib.sha256(), 0
    for chunk in stream:
        digest.update(chunk)
        size += len(chunk)
    assert (size, digest.hexdigest()) == (len(video), ref.sha256)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": ""}, "artifact name must be a non-empty string"),
    ({"name": "/abs/path.png"}, "without NUL or a leading '/'"),
    ({"data": "not bytes"}, "artifact data must be bytes, got str"),
    ({"mime_type": "png"}, "mime_type must be a media type such as image/png or video/mp4, got 'png'"),
    ({"task_uid": ""}, "task_uid must be the task's non-empty metadata.uid"),
    ({"metadata": {"$where": 1}}, "metadata must be a dict whose keys"),
])
def test_bad_input_is_refused_naming_what_is_accepted(store, kwargs, message):
    args = {"name": "u/1/x.png", "data": b"x", "mime_type": "image/png", "task_uid": "u"} | kwargs
    name, data = args.pop("name"), args.pop("data")
    with pytest.raises(ValueError, match=re.escape(message)):
        store.put(name, data, **args)
    assert store.list_for_task("u") == []

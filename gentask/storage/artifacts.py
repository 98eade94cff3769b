"""The artifact store: the files a task produced, kept in GridFS under names the caller chooses.

Bytes live in a GridFS bucket (`<bucket>.files`, `<bucket>.chunks`). A name becomes visible only
when its entry is inserted into `<bucket>.catalog`, whose _id is the name: the insert is atomic,
so two workers storing the same name at once keep exactly one copy (the loser deletes its own
upload and gets the winner's reference). A name that is already there is not uploaded again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gridfs import GridFSBucket, GridOut
from gridfs.errors import NoFile
from pymongo import ASCENDING, IndexModel
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from gentask.storage.mongo import translate_errors

log = logging.getLogger(__name__)

NAME_MAX = 1024
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")


@dataclass(frozen=True)
class ArtifactRef:
    """What a task's status records about a stored file."""

    name: str
    sha256: str
    size_bytes: int
    mime_type: str


def _ref(entry: Mapping[str, Any]) -> ArtifactRef:
    return ArtifactRef(name=entry["_id"], sha256=entry["sha256"], size_bytes=entry["sizeBytes"],
                       mime_type=entry["mimeType"])


class ArtifactStream:
    """One stored file, read chunk by chunk (iterate it for a streaming response) or at once."""

    def __init__(self, ref: ArtifactRef, grid_out: GridOut, db: Database[Any]) -> None:
        self.ref = ref
        self._out = grid_out
        self._db = db

    name = property(lambda self: self.ref.name)
    mime_type = property(lambda self: self.ref.mime_type)
    size_bytes = property(lambda self: self.ref.size_bytes)
    sha256 = property(lambda self: self.ref.sha256)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with translate_errors(self._db.client, f"reading artifact {self.name}"):
                chunk = self._out.readchunk()
            if not chunk:
                return
            yield chunk

    def read(self) -> bytes:
        """The whole file at once."""
        return b"".join(self)

    def close(self) -> None:
        """Release the GridFS cursor."""
        self._out.close()

    def __enter__(self) -> ArtifactStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ArtifactStore:
    """Files produced by tasks, by name; idempotent puts; listed and deleted per task."""

    def __init__(self, db: Database[Any], bucket: str = "artifacts") -> None:
        self._db = db
        self._bucket = GridFSBucket(db, bucket_name=bucket)
        self._catalog = db[f"{bucket}.catalog"]
        self._files = db[f"{bucket}.files"]

    def ensure_indexes(self) -> list[str]:
        """Create the catalog's per-task index (lists and deletes by task); returns its name."""
        with translate_errors(self._db.client, "creating the artifact indexes"):
            return self._catalog.create_indexes([IndexModel([("taskUID", ASCENDING), ("_id", ASCENDING)],
                                                            name="task_name")])

    def put(self, name: str, data: bytes, *, mime_type: str, task_uid: str,
            metadata: dict[str, Any] | None = None) -> ArtifactRef:
        """Store `data` under `name`, or return the reference already stored under that name."""
        _check_put(name, data, mime_type, task_uid, metadata)
        with translate_errors(self._db.client, f"storing artifact {name}"):
            existing = self._catalog.find_one({"_id": name})
            if existing is not None:
                return self._same(existing, data)
            data = bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            file_id = self._bucket.upload_from_stream(
                name, data, metadata={"taskUID": task_uid, "mimeType": mime_type, "sha256": digest})
            entry = {"_id": name, "fileId": file_id, "taskUID": task_uid, "mimeType": mime_type,
                     "sha256": digest, "sizeBytes": len(data), "metadata": dict(metadata or {}),
                     "createdAt": datetime.now(UTC)}
            try:
                self._catalog.insert_one(entry)
            except DuplicateKeyError:
                self._bucket.delete(file_id)  # another writer stored this name first: keep theirs
                winner = self._catalog.find_one({"_id": name})
                if winner is None:            # and its task deleted it again since: store ours afresh
                    return self.put(name, data, mime_type=mime_type, task_uid=task_uid, metadata=metadata)
                return self._same(winner, data)
            return _ref(entry)

    def open(self, name: str) -> ArtifactStream | None:
        """The stored file, or None when no artifact has this name."""
        with translate_errors(self._db.client, f"opening artifact {name}"):
            entry = self._catalog.find_one({"_id": name})
            if entry is None:
                return None
            try:
                grid_out = self._bucket.open_download_stream(entry["fileId"])
            except NoFile:
                return None  # deleted between the two reads
        return ArtifactStream(_ref(entry), grid_out, self._db)

    def list_for_task(self, task_uid: str) -> list[ArtifactRef]:
        """Every stored file of a task, by name."""
        with translate_errors(self._db.client, f"listing the artifacts of task {task_uid}"):
            return [_ref(e) for e in self._catalog.find({"taskUID": task_uid}).sort([("_id", ASCENDING)])]

    def delete_for_task(self, task_uid: str) -> int:
        """Delete every artifact of a task (and any upload of it that never got a name); how many names."""
        with translate_errors(self._db.client, f"deleting the artifacts of task {task_uid}"):
            file_ids = {e["fileId"] for e in self._catalog.find({"taskUID": task_uid}, {"fileId": 1})}
            file_ids |= {f["_id"] for f in self._files.find({"metadata.taskUID": task_uid}, {"_id": 1})}
            deleted = self._catalog.delete_many({"taskUID": task_uid}).deleted_count
            for file_id in file_ids:
                try:
                    self._bucket.delete(file_id)
                except NoFile:
                    pass
            return deleted

    @staticmethod
    def _same(entry: Mapping[str, Any], data: bytes) -> ArtifactRef:
        ref = _ref(entry)
        if ref.size_bytes != len(data) or ref.sha256 != hashlib.sha256(data).hexdigest():
            log.warning("artifact %s already exists with other content; keeping the stored one", ref.name,
                        extra={"artifact": ref.name, "sha256": ref.sha256})
        return ref


def _check_put(name: object, data: object, mime_type: object, task_uid: object, metadata: object) -> None:
    if not isinstance(name, str) or not name or len(name) > NAME_MAX or "\x00" in name or name.startswith("/"):
        raise ValueError(f"artifact name must be a non-empty string of at most {NAME_MAX} characters, "
                         f"without NUL or a leading '/', such as '<task-uid>/<attempt>/image-0.png'; got {name!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"artifact data must be bytes, got {type(data).__name__}")
    if not isinstance(mime_type, str) or not _MIME.match(mime_type):
        raise ValueError(f"mime_type must be a media type such as image/png or video/mp4, got {mime_type!r}")
    if not isinstance(task_uid, str) or not task_uid:
        raise ValueError(f"task_uid must be the task's non-empty metadata.uid, got {task_uid!r}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and k and not k.startswith("$") and "." not in k for k in metadata)):
        raise ValueError("metadata must be a dict whose keys are non-empty strings without '.' or a leading '$'")

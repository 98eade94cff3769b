"""MongoDB: the mirror of every GenerationTask, the artifact store (GridFS) and the mirror's one writer.

The only package that imports pymongo.
"""

from gentask.storage.artifacts import ArtifactRef, ArtifactStore, ArtifactStream
from gentask.storage.mirror import TaskMirror, record_from_task
from gentask.storage.mongo import StorageUnavailable, connect, disconnect
from gentask.storage.writer import MirrorWriter, WriterStats

__all__ = ["ArtifactRef", "ArtifactStore", "ArtifactStream", "MirrorWriter", "StorageUnavailable", "TaskMirror",
           "WriterStats", "connect", "disconnect", "record_from_task"]

"""MongoDB: the mirror of every GenerationTask and the artifact store (GridFS).

The only package that imports pymongo.
"""

from gentask.storage.artifacts import ArtifactRef, ArtifactStore, ArtifactStream
from gentask.storage.mirror import TaskMirror, record_from_task
from gentask.storage.mongo import StorageUnavailable, connect, disconnect

__all__ = ["ArtifactRef", "ArtifactStore", "ArtifactStream", "StorageUnavailable", "TaskMirror", "connect",
           "disconnect", "record_from_task"]

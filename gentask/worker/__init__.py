"""What a Job pod runs (and the inline executor runs in the operator's process)."""

from gentask.worker.run import Worker

__all__ = ["Worker"]

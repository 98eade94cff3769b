"""gentask: Kubernetes-native AI generation tasks."""

__version__ = "0.1.0"

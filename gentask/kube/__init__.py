"""The only code that talks to the Kubernetes API server: one async client (client.py), one
kubeconfig / in-cluster resolver (config.py), one error type (errors.py); names and labels, Job
manifests, status transitions and Events of a task."""

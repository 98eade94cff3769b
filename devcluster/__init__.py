"""The local cluster for development and tests: a real control plane, FerretDB and a process
node that runs Job pods as local processes. See devcluster.cluster and .node."""

from devcluster.cluster import DEFAULT_ROOT, ClusterError, DevCluster, State, tools_dir

__all__ = ["DEFAULT_ROOT", "ClusterError", "DevCluster", "State", "tools_dir"]

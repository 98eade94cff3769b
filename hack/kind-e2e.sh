#!/usr/bin/env bash
# `make kind-e2e`: the chart's end-to-end suite (tests/e2e) on a kind cluster with the real image.
#
# For machines with a Docker engine, kind, kubectl and helm. It cannot run where no Docker
# engine runs (the project's development machines and CI): there `make test` runs the same
# suite on the local cluster's real node (kubelet + containerd), with the image built by
# hack/build-image.sh.
#
# Steps: create a kind cluster; build the image and load it into the cluster; start a MongoDB
# in it; run tests/e2e against that kubeconfig (the suite installs the chart with the image,
# runs tasks over REST through `kubectl port-forward`, and uninstalls it); delete the cluster.
#
#   IMAGE=ghcr.io/gentask/gentask:0.1.0   the image to build and test
#   KIND_CLUSTER=gentask-e2e              the kind cluster's name
#   KEEP_CLUSTER=1                        keep the cluster afterwards (for a look around)
#   PYTEST_ARGS=...                       passed to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-ghcr.io/gentask/gentask:0.1.0}
CLUSTER=${KIND_CLUSTER:-gentask-e2e}
PY=${PY:-.venv/bin/python}
MONGO_IMAGE=mongo:7.0.14

for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind-e2e: '$tool' is not installed" >&2; exit 2; }
done
if ! docker info >/dev/null 2>&1; then
    echo "kind-e2e: no Docker engine answers ('docker info' failed); kind needs one." >&2
    echo "          Without Docker, 'make test' runs tests/e2e on the local cluster instead." >&2
    exit 2
fi

work=$(mktemp -d)
cleanup() {
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
        echo "kind-e2e: cluster '$CLUSTER' kept; kubeconfig: $work/kubeconfig"
    else
        kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT

echo "kind-e2e: creating kind cluster '$CLUSTER'"
kind create cluster --name "$CLUSTER" --kubeconfig "$work/kubeconfig" --wait 180s
export KUBECONFIG=$work/kubeconfig

echo "kind-e2e: building $IMAGE and loading it into the cluster"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "kind-e2e: starting MongoDB in namespace gentask-mongo"
kubectl apply -f - <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: gentask-mongo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: mongo, namespace: gentask-mongo}
spec:
  replicas: 1
  selector: {matchLabels: {app: mongo}}
  template:
    metadata: {labels: {app: mongo}}
    spec:
      containers:
        - name: mongo
          image: $MONGO_IMAGE
          args: [--bind_ip_all]
          ports: [{name: mongo, containerPort: 27017}]
          readinessProbe: {tcpSocket: {port: mongo}, periodSeconds: 2}
          volumeMounts: [{name: data, mountPath: /data/db}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: mongo, namespace: gentask-mongo}
spec:
  selector: {app: mongo}
  ports: [{name: mongo, port: 27017, targetPort: mongo}]
YAML
kubectl -n gentask-mongo rollout status deploy/mongo --timeout=300s
mongo_url=mongodb://mongo.gentask-mongo.svc.cluster.local:27017/gentask

# The suite calls $GENTASK_TOOLS_DIR/bin/{kubectl,helm}: point it at the ones on PATH.
mkdir -p "$work/tools/bin"
ln -s "$(command -v kubectl)" "$work/tools/bin/kubectl"
ln -s "$(command -v helm)" "$work/tools/bin/helm"

echo "kind-e2e: running tests/e2e"
# GENTASK_TEST_MONGO_URL is what the pods use (the suite itself talks to MongoDB only through the API).
# PYTEST_ARGS is split into words on purpose.
# shellcheck disable=SC2086
GENTASK_TOOLS_DIR=$work/tools \
GENTASK_TEST_KUBECONFIG=$work/kubeconfig \
GENTASK_TEST_MONGO_URL=$mongo_url \
GENTASK_E2E_KIND=1 \
GENTASK_E2E_IMAGE=$IMAGE \
    "$PY" -m pytest tests/e2e ${PYTEST_ARGS:-}

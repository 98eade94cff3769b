#!/usr/bin/env bash
# Build the local cluster's binaries once into a cache outside the repository.
#
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)   group kube
#   kubelet, kube-proxy, images/pause.tar                                   (the same pin)        group kubelet
#   ferretdb                                                                (FerretDB v1.x)
#   helm                                                                    (helm.sh/helm/v3)
#   kube-score    (the chart's linter: tests/unit/chart/test_kube_score.py)  (github.com/zegl/kube-score)
#
# Every tool is built from the Go module proxy, into $GENTASK_TOOLS_DIR/bin. A tool whose
# stamp file matches its pinned version is not rebuilt, so a second run takes seconds.
# The kubelet group is what the real node needs (python -m devcluster up --node real): the
# kubelet and kube-proxy, and the pause image compiled from the module's build/pause/linux/pause.c
# (gcc -static) and packed as an OCI archive (devcluster/ociarchive.py) for containerd.
# Usage: hack/build-tools.sh [kube|kubelet|ferretdb|helm|kube-score ...]   (default: all)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}          # the etcd that KUBE_VERSION's go.mod names
FERRETDB_VERSION=${FERRETDB_VERSION:-v1.24.2}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUBE_SCORE_VERSION=${KUBE_SCORE_VERSION:-v1.20.0}

PAUSE_VERSION=${PAUSE_VERSION:-3.10.2}         # build/pause/Makefile's TAG at KUBE_VERSION

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_DIR=${GENTASK_TOOLS_DIR:-$HOME/.cache/gentask/tools}
BIN="$TOOLS_DIR/bin"
IMAGES="$TOOLS_DIR/images"
SRC="$TOOLS_DIR/src"
LOGS="$TOOLS_DIR/logs"
mkdir -p "$BIN" "$SRC" "$LOGS" "$IMAGES"
cd "$TOOLS_DIR"   # go commands outside a module run here, whatever happens to the caller's folder

export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod" GOTOOLCHAIN=${GOTOOLCHAIN:-local}

say() { printf '[tools] %s\n' "$*" >&2; }

command -v go >/dev/null || { say "go is not on PATH: install Go >= 1.25 (https://go.dev/doc/install)"; exit 1; }

# run_step TOOL LOGFILE CMD...: run a build step, and on failure name the tool and show why.
run_step() {
  local tool=$1 log=$2; shift 2
  if ! "$@" >>"$log" 2>&1; then
    say "FAILED to build $tool (step: $*)"
    say "last lines of $log:"
    tail -n 25 "$log" | sed 's/^/    /' >&2
    exit 1
  fi
}

fresh() {  # fresh NAME VERSION: true when NAME is built at VERSION
  [[ -x "$BIN/$1" && "$(cat "$BIN/.$1.version" 2>/dev/null)" == "$2" ]]
}

stamp() { echo "$2" >"$BIN/.$1.version"; }

# kube_module DIR LOG PACKAGE...: a module in DIR that requires k8s.io/kubernetes (and etcd) at
# their pins and imports PACKAGEs, tidied. k8s.io/kubernetes points its staging modules at
# ./staging; as a dependency they need replace lines to their published v0.X.Y twins. Take the
# list from its own go.mod.
kube_module() {
  local dir=$1 log=$2 p; shift 2
  mkdir -p "$dir"
  local staging="v0.${KUBE_VERSION#v1.}"
  run_step kubernetes "$log" go mod download -json "k8s.io/kubernetes@$KUBE_VERSION"
  local kmod
  kmod=$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod
  {
    echo "module gentask.local/kubetools"
    echo
    echo "go 1.25.0"
    echo
    echo "require ("
    echo "    k8s.io/kubernetes $KUBE_VERSION"
    echo "    go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo ")"
    echo
    echo "replace ("
    grep -E '^\s+k8s\.io/[a-z0-9-]+ => \./staging/' "$kmod" | awk -v v="$staging" '{print "    " $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } >"$dir/tools.go"
  (cd "$dir" && run_step kubernetes "$log" go mod tidy)
}

kube_ldflags() {  # the version stamps a release build sets
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}

build_kube() {
  local names=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl) n all=1
  for n in "${names[@]}"; do fresh "$n" "$KUBE_VERSION" || all=0; done
  if (( all )); then say "kubernetes $KUBE_VERSION: cached"; return; fi
  local t0=$SECONDS dir="$SRC/kube-$KUBE_VERSION" log="$LOGS/kube.log"
  : >"$log"
  say "kubernetes $KUBE_VERSION + etcd $ETCD_VERSION: building (cold: about 6 min on 2 cores; log: $log)"
  kube_module "$dir" "$log" go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  mkdir -p "$dir/out"
  (cd "$dir" && run_step kubernetes "$log" go build -tags tools -ldflags "$(kube_ldflags)" -o "$dir/out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  (cd "$dir" && run_step etcd "$log" go build -ldflags "-s -w" -o "$dir/out/etcd" go.etcd.io/etcd/server/v3)
  for n in "${names[@]}"; do mv -f "$dir/out/$n" "$BIN/$n"; stamp "$n" "$KUBE_VERSION"; done
  say "kubernetes $KUBE_VERSION: built in $((SECONDS - t0)) s"
}

# The real node's binaries, from the same pin in a module of their own (so that the kube group's
# cached binaries stay as they are), and the pause image.
build_kubelet() {
  local names=(kubelet kube-proxy) n all=1
  for n in "${names[@]}"; do fresh "$n" "$KUBE_VERSION" || all=0; done
  if (( all )); then
    say "kubelet, kube-proxy $KUBE_VERSION: cached"
  else
    local t0=$SECONDS dir="$SRC/kubelet-$KUBE_VERSION" log="$LOGS/kubelet.log"
    : >"$log"
    say "kubelet, kube-proxy $KUBE_VERSION: building (about 1 min after the kube group; log: $log)"
    kube_module "$dir" "$log" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
    mkdir -p "$dir/out"
    (cd "$dir" && run_step kubelet "$log" go build -tags tools -ldflags "$(kube_ldflags)" -o "$dir/out/" \
        k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
    for n in "${names[@]}"; do mv -f "$dir/out/$n" "$BIN/$n"; stamp "$n" "$KUBE_VERSION"; done
    say "kubelet, kube-proxy $KUBE_VERSION: built in $((SECONDS - t0)) s"
  fi
  build_pause
}

# The sandbox image every pod starts with: pause.c of the pinned module, static, in an OCI archive.
build_pause() {
  local version="$PAUSE_VERSION@$KUBE_VERSION" out="$IMAGES/pause.tar"
  if [[ -f $out && "$(cat "$IMAGES/.pause.version" 2>/dev/null)" == "$version" ]]; then
    say "pause image $PAUSE_VERSION: cached"; return
  fi
  command -v gcc >/dev/null || { say "gcc is not on PATH: the pause image needs it (apt-get install gcc libc6-dev)"; exit 1; }
  local t0=$SECONDS log="$LOGS/pause.log" dir="$SRC/pause-$PAUSE_VERSION"
  : >"$log"
  run_step pause "$log" go mod download -json "k8s.io/kubernetes@$KUBE_VERSION"
  local src
  src=$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/build/pause/linux/pause.c
  mkdir -p "$dir"
  run_step pause "$log" gcc -Os -Wall -Werror -static "-DVERSION=v$PAUSE_VERSION-gentask" -o "$dir/pause" "$src"
  run_step pause "$log" strip "$dir/pause"
  run_step pause "$log" python3 "$REPO/devcluster/ociarchive.py" --name "registry.k8s.io/pause:$PAUSE_VERSION" \
      --out "$out" --file "/pause=$dir/pause" --entrypoint /pause --user 65535:65535
  echo "$version" >"$IMAGES/.pause.version"
  say "pause image $PAUSE_VERSION: built in $((SECONDS - t0)) s ($out)"
}

# go_install TOOL VERSION PACKAGE BINARY-NAME-AFTER-INSTALL
go_install() {
  local tool=$1 version=$2 pkg=$3 built=$4
  if fresh "$tool" "$version"; then say "$tool $version: cached"; return; fi
  local t0=$SECONDS log="$LOGS/$tool.log" gobin="$SRC/$tool-$version"
  : >"$log"
  say "$tool $version: building (log: $log)"
  mkdir -p "$gobin"
  run_step "$tool" "$log" env GOBIN="$gobin" GOFLAGS="-trimpath" go install -ldflags "-s -w" "$pkg@$version"
  mv -f "$gobin/$built" "$BIN/$tool"
  stamp "$tool" "$version"
  say "$tool $version: built in $((SECONDS - t0)) s"
}

# FerretDB embeds build/version/version.txt, which is empty in the module zip, and refuses to
# start without it: build from a writable copy of the module with the file written.
build_ferretdb() {
  local tool=ferretdb version=$FERRETDB_VERSION
  if fresh "$tool" "$version"; then say "$tool $version: cached"; return; fi
  local t0=$SECONDS log="$LOGS/$tool.log" dir="$SRC/$tool-$version"
  : >"$log"
  say "$tool $version: building (log: $log)"
  run_step "$tool" "$log" go mod download -json "github.com/FerretDB/FerretDB@$version"
  local moddir
  moddir=$(go mod download -json "github.com/FerretDB/FerretDB@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$dir" && cp -r "$moddir" "$dir" && chmod -R u+w "$dir"
  echo "$version" >"$dir/build/version/version.txt"
  (cd "$dir" && run_step "$tool" "$log" go build -ldflags "-s -w" -o "$BIN/$tool" ./cmd/ferretdb)
  stamp "$tool" "$version"
  say "$tool $version: built in $((SECONDS - t0)) s"
}

build_helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm; }
build_kube_score() { go_install kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score kube-score; }

targets=("$@")
(( ${#targets[@]} )) || targets=(kube kubelet ferretdb helm kube-score)
for t in "${targets[@]}"; do
  case $t in
    kube) build_kube ;;
    kubelet) build_kubelet ;;
    ferretdb) build_ferretdb ;;
    helm) build_helm ;;
    kube-score) build_kube_score ;;
    *) say "unknown tool '$t': expected kube, kubelet, ferretdb, helm or kube-score"; exit 2 ;;
  esac
done
say "tools ready in $BIN"

#!/usr/bin/env bash
# Build the gentask image (`make image`): with Docker when a Docker engine answers, else with
# buildah, which needs no daemon. Writes the image as a docker-archive too, for containerd nodes:
#
#   hack/build-image.sh            prints progress on stderr, and the archive's path on stdout
#   ctr -n k8s.io images import "$(hack/build-image.sh)"
#
# The base (the Dockerfile's PYTHON_IMAGE) is used from the local image store, else pulled when
# its registry answers within GENTASK_PULL_TIMEOUT seconds, else made here from Debian packages
# (mmdebstrap: Python 3.11 of Debian bookworm) and cached as a root filesystem tarball under
# $GENTASK_TOOLS_DIR/images/, named after a hash of its inputs, so later builds reuse it.
#
# When this machine's pip trusts a CA bundle of its own (PIP_CERT, pip's `cert` setting,
# REQUESTS_CA_BUNDLE, SSL_CERT_FILE, or extra certificates in /usr/local/share/ca-certificates:
# a network that intercepts TLS), that bundle goes to the build as the secret `pip-ca`: mounted
# for the RUN that downloads packages, never written to a layer.
#
# Settings (environment):
#   IMAGE                  tag (default ghcr.io/gentask/gentask:VERSION)
#   VERSION                the image's version label (default: pyproject.toml's version)
#   IMAGE_ARCHIVE          the docker-archive (default $GENTASK_TOOLS_DIR/images/gentask-VERSION.tar)
#   PYTHON_IMAGE           the base (default: the Dockerfile's ARG PYTHON_IMAGE)
#   GENTASK_IMAGE_BUILDER  auto | docker | buildah (default auto: docker when `docker info` succeeds)
#   GENTASK_IMAGE_BASE     auto | registry | debian (default auto: registry when reachable, else debian)
#   GENTASK_BASE_REFRESH   1: make the Debian base again (picks up Debian's updates)
#   GENTASK_PULL_TIMEOUT   seconds the registry gets to answer (default 10)
#   GENTASK_CA_BUNDLE      the CA bundle for pip in the build (default: found as above; "none": no secret)
#   GENTASK_OCI_RUNTIME    buildah's OCI runtime (default runc; crun fails on cgroup v1 hybrid hosts)
#   GENTASK_DEBIAN_MIRROR  (default http://deb.debian.org/debian; security updates from debian-security)
set -euo pipefail

cd "$(dirname "$0")/.."
start=$SECONDS
say() { printf '[image] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
took() { printf '%ss' "$((SECONDS - $1))"; }

VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}
[[ -n $VERSION ]] || die "no version in pyproject.toml and VERSION is not set"
IMAGE=${IMAGE:-ghcr.io/gentask/gentask:$VERSION}
TOOLS=${GENTASK_TOOLS_DIR:-$HOME/.cache/gentask/tools}
IMAGES=$TOOLS/images
IMAGE_ARCHIVE=${IMAGE_ARCHIVE:-$IMAGES/gentask-$VERSION.tar}
DEFAULT_BASE=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
PYTHON_IMAGE=${PYTHON_IMAGE:-$DEFAULT_BASE}
BASE_MODE=${GENTASK_IMAGE_BASE:-auto}
PULL_TIMEOUT=${GENTASK_PULL_TIMEOUT:-10}
RUNTIME=${GENTASK_OCI_RUNTIME:-runc}
[[ $BASE_MODE =~ ^(auto|registry|debian)$ ]] || die "GENTASK_IMAGE_BASE=$BASE_MODE: use auto, registry or debian"
mkdir -p "$IMAGES" "$(dirname "$IMAGE_ARCHIVE")"

# One build at a time on this machine (the base cache and the archive are shared).
exec 9>"$IMAGES/.gentask-image.lock"
if ! flock -n 9; then
  say "another image build holds $IMAGES/.gentask-image.lock: waiting for it"
  flock 9
fi

tmpfiles=()
cleanup() { ((${#tmpfiles[@]})) && rm -rf "${tmpfiles[@]}"; true; }
trap cleanup EXIT

# ---- lint ---------------------------------------------------------------------------------------
if command -v hadolint >/dev/null; then
  hadolint Dockerfile || die "hadolint found problems in the Dockerfile (above): fix them, or build with hadolint off PATH"
  say "hadolint: Dockerfile ok"
else
  say "hadolint not installed: lint skipped"
fi

# ---- builder ------------------------------------------------------------------------------------
docker_answers() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }
builder=${GENTASK_IMAGE_BUILDER:-auto} why=
if [[ $builder == auto ]]; then
  if docker_answers; then builder=docker why=" (the engine answers)"; else builder=buildah why=" (no Docker engine answers)"; fi
elif [[ $builder == docker ]] && ! docker_answers; then
  die "GENTASK_IMAGE_BUILDER=docker but \`docker info\` fails: start the Docker engine, or use GENTASK_IMAGE_BUILDER=buildah"
fi
case $builder in
  docker)
    say "builder: Docker$why" ;;
  buildah)
    say "builder: buildah$why, OCI runtime $RUNTIME"
    packages=(buildah skopeo)
    [[ $RUNTIME == runc || $RUNTIME == crun ]] && packages+=("$RUNTIME")
    bash hack/system-packages.sh "${packages[@]}" \
      || die "buildah needs the Debian packages named above, which could not be installed here: install them (as root), then run make image again"
    buildah info >/dev/null 2>&1 || die "buildah cannot use its storage here: \`buildah info\` says: $(buildah info 2>&1 | tail -n 3)" ;;
  *) die "GENTASK_IMAGE_BUILDER=$builder: use auto, docker or buildah" ;;
esac

# ---- the CA bundle pip trusts on this machine, as the build secret pip-ca -----------------------
ca_bundle() {  # -> $bundle: the file, or empty for none
  local f
  bundle=
  if [[ -n ${GENTASK_CA_BUNDLE:-} ]]; then bundle=$GENTASK_CA_BUNDLE; return; fi
  for f in "${PIP_CERT:-}" "$(pip_cert_setting)" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
    [[ -n $f && -s $f ]] && { bundle=$f; return; }
  done
  # extra certificates installed locally: the system bundle with them (update-ca-certificates
  # usually has merged them already; a duplicate does no harm)
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    bundle=$(mktemp); tmpfiles+=("$bundle")
    cat /etc/ssl/certs/ca-certificates.crt /usr/local/share/ca-certificates/*.crt >"$bundle" 2>/dev/null || true
  fi
}
pip_cert_setting() {
  local py
  for py in python3 python; do
    command -v "$py" >/dev/null || continue
    "$py" -m pip config get global.cert 2>/dev/null && return
  done
  true
}
secret=()
ca_bundle
if [[ -n $bundle && $bundle != none ]]; then
  [[ -r $bundle ]] || die "CA bundle $bundle is not readable: set GENTASK_CA_BUNDLE to a readable PEM bundle (or to none)"
  grep -q 'BEGIN CERTIFICATE' "$bundle" || die "CA bundle $bundle holds no PEM certificate: set GENTASK_CA_BUNDLE to a PEM bundle (or to none)"
  secret=(--secret "id=pip-ca,src=$bundle")
  say "pip in the build trusts $bundle ($(grep -c 'BEGIN CERTIFICATE' "$bundle") certificates), given as build secret pip-ca"
else
  say "no CA bundle of this machine's own: pip in the build uses its default trust store"
fi

# ---- base: the registry's, or made from Debian packages -----------------------------------------
qualify() {  # the fully qualified name of an image reference (docker.io short names made explicit)
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then echo "docker.io/library/$ref"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then echo "$ref"
  else echo "docker.io/$ref"; fi
}

DEBIAN_SUITE=bookworm
DEBIAN_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,passwd
DEBIAN_MIRROR=${GENTASK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SOURCES=("deb $DEBIAN_MIRROR $DEBIAN_SUITE main" "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main"
                "deb ${DEBIAN_MIRROR%/debian}/debian-security $DEBIAN_SUITE-security main")
# shellcheck disable=SC2016  # $1 is the root filesystem, in the shell that runs mmdebstrap's hook
CLEAN_HOOK='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/*.log'
MMDEBSTRAP_OPTS=(--variant=minbase --format=tar --skip=output/dev
                 --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
                 --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
                 --dpkgopt='path-exclude=/usr/share/locale/*' --customize-hook="$CLEAN_HOOK")
BASE_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
# Everything that shapes the base, hashed: a change to any of it makes (and caches) a new one.
base_key=$( { echo "recipe 1"; echo "$DEBIAN_SUITE $(dpkg --print-architecture 2>/dev/null || uname -m)"
              echo "$DEBIAN_PACKAGES"; printf '%s\n' "${DEBIAN_SOURCES[@]}" "${MMDEBSTRAP_OPTS[@]}" "${BASE_ENV[@]}"
            } | sha256sum | cut -c1-12)
BASE_TAR=$IMAGES/python3.11-$DEBIAN_SUITE-$base_key.rootfs.tar
BASE_TAG=localhost/gentask-python:3.11-$DEBIAN_SUITE-$base_key

have_image() {
  if [[ $builder == docker ]]; then docker image inspect "$1" >/dev/null 2>&1
  else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}

registry_answers() {  # the image's manifest can be read within PULL_TIMEOUT seconds
  if [[ $builder == docker ]]; then timeout "$PULL_TIMEOUT" docker manifest inspect "$1" >/dev/null 2>&1
  else timeout "$PULL_TIMEOUT" skopeo inspect --retry-times 0 --raw "docker://$(qualify "$1")" >/dev/null 2>&1; fi
}

pull() {
  say "base: pulling $1"
  local t=$SECONDS
  if [[ $builder == docker ]]; then timeout 900 docker pull "$1" >&2 || return 1
  else timeout 900 buildah pull --retry 1 --quiet "$(qualify "$1")" >/dev/null || return 1; fi
  say "base: pulled $1 in $(took $t)"
}

make_debian_rootfs() {
  bash hack/system-packages.sh mmdebstrap \
    || die "making the base from Debian packages needs mmdebstrap (above): install it as root, or make a registry with $PYTHON_IMAGE reachable"
  local t=$SECONDS partial=$BASE_TAR.partial
  rm -f "$partial"; tmpfiles+=("$partial")
  say "base: making Python 3.11 from Debian $DEBIAN_SUITE packages with mmdebstrap (about a minute, once; cached as $BASE_TAR)"
  local log=$IMAGES/gentask-base.log
  if ! mmdebstrap "${MMDEBSTRAP_OPTS[@]}" --include="$DEBIAN_PACKAGES" "$DEBIAN_SUITE" "$partial" "${DEBIAN_SOURCES[@]}" \
       2>&1 | tee "$log" | sed -u 's/^/[image]   mmdebstrap: /' >&2; then
    if grep -q 'chroot mode' "$log"; then
      die "mmdebstrap cannot make a root filesystem as $(id -un) (it needs root, or user namespaces with subuids): run make image as root, or give $(id -un) subordinate ids (usermod --add-subuids/--add-subgids)"
    fi
    die "mmdebstrap failed (above; log $log): check that $DEBIAN_MIRROR answers (GENTASK_DEBIAN_MIRROR picks another mirror)"
  fi
  tar -tf "$partial" ./usr/bin/python3.11 >/dev/null 2>&1 || die "the Debian base has no /usr/bin/python3.11: is $DEBIAN_SUITE still the suite with Python 3.11?"
  mv "$partial" "$BASE_TAR"
  say "base: root filesystem made in $(took $t) ($(du -h "$BASE_TAR" | cut -f1))"
}

import_debian_base() {  # the cached root filesystem -> an image in the builder's store
  local t=$SECONDS
  say "base: importing $BASE_TAR as $BASE_TAG"
  if [[ $builder == docker ]]; then
    local changes=() e
    for e in "${BASE_ENV[@]}"; do changes+=(--change "ENV $e"); done
    docker import "${changes[@]}" --change 'CMD ["python3"]' "$BASE_TAR" "$BASE_TAG" >/dev/null
  else
    local ctr envs=() e
    for e in "${BASE_ENV[@]}"; do envs+=(--env "$e"); done
    ctr=$(buildah from --quiet scratch)
    if ! { buildah add --quiet "$ctr" "$BASE_TAR" / >/dev/null \
           && buildah config "${envs[@]}" --cmd '["python3"]' \
                --label "org.opencontainers.image.description=Python 3.11 from Debian $DEBIAN_SUITE packages (gentask base $base_key)" "$ctr" \
           && buildah commit --quiet --rm "$ctr" "$BASE_TAG" >/dev/null; }; then
      buildah rm "$ctr" >/dev/null 2>&1 || true
      die "could not import $BASE_TAR into buildah's store (above); delete the file to make it again"
    fi
  fi
  say "base: imported in $(took $t)"
}

debian_base() {
  if [[ ${GENTASK_BASE_REFRESH:-} == 1 ]]; then rm -f "$BASE_TAR"; fi
  if [[ ${GENTASK_BASE_REFRESH:-} != 1 ]] && have_image "$BASE_TAG"; then
    say "base: $BASE_TAG (made from Debian $DEBIAN_SUITE packages, cached)"
  else
    if [[ -s $BASE_TAR ]]; then say "base: reusing $BASE_TAR"; else make_debian_rootfs; fi
    import_debian_base
  fi
  base=$BASE_TAG
}

local_ref() {  # the name under which the local store holds the image, if it does
  local ref
  for ref in "$1" "$(qualify "$1")"; do have_image "$ref" && { echo "$ref"; return; }; done
  return 1
}

base=
if [[ $BASE_MODE == debian ]]; then
  debian_base
elif base=$(local_ref "$PYTHON_IMAGE"); then
  say "base: $base (in the local image store)"
elif registry_answers "$PYTHON_IMAGE"; then
  pull "$PYTHON_IMAGE" || die "the registry answered but pulling $PYTHON_IMAGE failed (above): try again, or GENTASK_IMAGE_BASE=debian"
  base=$(local_ref "$PYTHON_IMAGE") || die "pulled $PYTHON_IMAGE but the image store does not show it"
elif [[ $BASE_MODE == registry ]]; then
  die "the registry of $PYTHON_IMAGE does not answer within ${PULL_TIMEOUT}s (GENTASK_IMAGE_BASE=registry): check the network, or use GENTASK_IMAGE_BASE=auto"
else
  say "base: the registry of $PYTHON_IMAGE does not answer within ${PULL_TIMEOUT}s: using Python 3.11 from Debian $DEBIAN_SUITE packages instead"
  debian_base
fi

# ---- build --------------------------------------------------------------------------------------
log=$IMAGES/gentask-build.log
iid=$(mktemp); tmpfiles+=("$iid")
args=(--build-arg "PYTHON_IMAGE=$base" --build-arg "VERSION=$VERSION" "${secret[@]}" -t "$IMAGE" --iidfile "$iid" -f Dockerfile .)
say "building $IMAGE on $base (log: $log)"
t=$SECONDS
set +e
if [[ $builder == docker ]]; then
  DOCKER_BUILDKIT=1 docker build "${args[@]}" 2>&1 | tee "$log" >&2
else
  buildah bud --layers --pull=never --runtime "$RUNTIME" "${args[@]}" 2>&1 | tee "$log" >&2
fi
rc=${PIPESTATUS[0]}
set -e
if ((rc)); then
  if grep -qE 'CERTIFICATE_VERIFY_FAILED|SSLError|certificate verify failed' "$log"; then
    die "the build failed: pip does not trust the network's TLS certificates. Give the build the CA bundle that does: GENTASK_CA_BUNDLE=/path/to/bundle.pem make image"
  elif grep -qE 'cgroups in hybrid mode|crun:' "$log"; then
    die "the build failed: the OCI runtime cannot run here (above): GENTASK_OCI_RUNTIME=runc make image"
  elif grep -qE 'Could not find a version|Failed to establish a new connection|Temporary failure in name resolution|No matching distribution' "$log"; then
    die "the build failed: pip could not download the dependencies (above): check that PyPI answers from this machine"
  fi
  die "the build failed (exit $rc; the failing step is above, the whole output in $log)"
fi
image_id=$(sed 's/^sha256://' "$iid")
say "built $IMAGE (${image_id:0:12}) in $(took $t)"

# ---- archive for containerd ---------------------------------------------------------------------
if [[ -s $IMAGE_ARCHIVE && $(cat "$IMAGE_ARCHIVE.id" 2>/dev/null) == "$image_id $IMAGE" ]]; then
  say "archive: $IMAGE_ARCHIVE holds this image already"
else
  t=$SECONDS
  partial=$IMAGE_ARCHIVE.partial.$$
  tmpfiles+=("$partial")
  say "archive: writing $IMAGE_ARCHIVE (docker-archive)"
  rm -f "$IMAGE_ARCHIVE.id"
  if [[ $builder == docker ]]; then
    docker save -o "$partial" "$IMAGE" || die "docker save $IMAGE failed (above)"
  else
    buildah push --quiet "$IMAGE" "docker-archive:$partial:$IMAGE" >/dev/null || die "buildah push to docker-archive:$partial failed (above)"
  fi
  mv "$partial" "$IMAGE_ARCHIVE"
  echo "$image_id $IMAGE" >"$IMAGE_ARCHIVE.id"
  say "archive: written in $(took $t) ($(du -h "$IMAGE_ARCHIVE" | cut -f1))"
fi
say "done in $(took $start): $IMAGE; load it into a containerd node with: ctr -n k8s.io images import $IMAGE_ARCHIVE"
echo "$IMAGE_ARCHIVE"

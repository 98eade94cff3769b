# syntax=docker/dockerfile:1
#
# One image for every gentask component. The entrypoint is the `gentask` command:
#   args [api]                          the REST API (FastAPI on $PORT)
#   args [operator]                     the Kopf operator (metrics and probes on $GENTASK_METRICS_PORT)
#   command [gentask, worker, run, NS/NAME]   one task: what the operator's Job pods run
#
# Build: `make image` (hack/build-image.sh: Docker when an engine answers, else buildah; both write
# the image as a docker-archive for containerd nodes too). By hand: docker build -t gentask .
#
# A network that intercepts TLS: give pip the CA bundle that trusts it as the build secret pip-ca
# (docker build --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt ...; buildah bud takes
# the same flag). It is mounted for the one RUN that downloads, and never written to a layer.
#
# The base is pinned to a Python patch release and a Debian release. For reproducible builds,
# pin its digest too (docker buildx imagetools inspect python:3.11.14-slim-bookworm) with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- build: a virtualenv with gentask and its dependencies (all of them ship wheels) ----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/gentask

WORKDIR /src
# Dependencies and the build backend first (the dependencies through an empty stand-in package),
# so that a change to the code alone reuses this layer and downloads nothing. Their bytecode is
# compiled here, hash-based and unchecked: valid whatever the files' times become in later layers,
# and no stat of the sources at import (the image's files never change).
COPY pyproject.toml README.md LICENSE ./
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && /opt/gentask/bin/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' > build-requires.txt \
 && /opt/gentask/bin/pip install --prefer-binary --no-compile -r build-requires.txt \
 && mkdir gentask && touch gentask/__init__.py \
 && /opt/gentask/bin/pip install --prefer-binary --no-build-isolation --no-compile . \
 && /opt/gentask/bin/pip uninstall -y gentask \
 && rm -rf gentask build build-requires.txt \
 && /opt/gentask/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/gentask/lib
COPY gentask ./gentask
# Install the code (no network: the build backend is in the virtualenv), compile its bytecode now
# (the root filesystem is read-only at run time), drop the installers, and fail the build if a
# component's modules do not import.
RUN /opt/gentask/bin/pip install --no-deps --no-build-isolation --no-compile . \
 && /opt/gentask/bin/pip uninstall -y pip setuptools wheel \
 && /opt/gentask/bin/python -m compileall -q --invalidation-mode unchecked-hash \
        "$(/opt/gentask/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/gentask" \
 && /opt/gentask/bin/gentask --help \
 && /opt/gentask/bin/python -c "import gentask.operator, gentask.worker.run, gentask.api.app"

# ---- runtime: the virtualenv on a clean slim base, non-root, nothing to compile with ---------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gentask" \
      org.opencontainers.image.description="Kubernetes-native AI generation tasks: API, operator and worker" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# The base's standard library, byte-compiled: python:*-slim ships it without bytecode, and on a
# read-only root filesystem every start would compile what it imports again (Debian's own python3
# has it compiled already: then this finds nothing to do). Then the user: the uid/gid the chart
# and the operator's Job pods run as (runAsUser/runAsGroup 65532).
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash -x '/(test|tests|idlelib|turtledemo)/' \
        "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')" \
 && groupadd --system --gid 65532 gentask \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
            --shell /usr/sbin/nologin gentask

COPY --from=build /opt/gentask /opt/gentask

# A read-only root filesystem: no bytecode writes, HOME and temporary files in /tmp (an emptyDir).
ENV PATH=/opt/gentask/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    ENVIRONMENT=production

WORKDIR /tmp
USER 65532:65532
EXPOSE 8080 9090

ENTRYPOINT ["gentask"]
CMD ["--help"]

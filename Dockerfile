# syntax=docker/dockerfile:1
#
# One image for every gentask component. The entrypoint is the `gentask` command:
#   args [api]                          the REST API (FastAPI on $PORT)
#   args [operator]                     the Kopf operator (metrics and probes on $GENTASK_METRICS_PORT)
#   command [gentask, worker, run, NS/NAME]   one task: what the operator's Job pods run
#
# Build: `make image` (docker build -t ghcr.io/gentask/gentask:<version> .)
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
# Dependencies first (installed through an empty stand-in package), so that a change to the
# code alone reuses this layer.
COPY pyproject.toml README.md LICENSE ./
RUN mkdir gentask && touch gentask/__init__.py \
 && /opt/gentask/bin/pip install --prefer-binary . \
 && /opt/gentask/bin/pip uninstall -y gentask \
 && rm -rf gentask build
COPY gentask ./gentask
# Install the code, compile its bytecode now (the root filesystem is read-only at run time),
# drop the installers, and fail the build if a component's modules do not import.
RUN /opt/gentask/bin/pip install --no-deps . \
 && /opt/gentask/bin/python -m compileall -q /opt/gentask/lib \
 && /opt/gentask/bin/pip uninstall -y pip setuptools \
 && /opt/gentask/bin/gentask --help \
 && /opt/gentask/bin/python -c "import gentask.operator, gentask.worker.run, gentask.api"

# ---- runtime: the virtualenv on a clean slim base, non-root, nothing to compile with ---------------
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gentask" \
      org.opencontainers.image.description="Kubernetes-native AI generation tasks: API, operator and worker" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

# The uid/gid the chart and the operator's Job pods run as (runAsUser/runAsGroup 65532).
RUN groupadd --system --gid 65532 gentask \
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

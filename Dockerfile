# syntax=docker/dockerfile:1
# norce-order-bridge container image.
#   docker build -t norce-order-bridge:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" \
#     --build-arg SOURCE=https://<your git host>/norce-order-bridge .
# Both stages use the same pinned base so the venv copied from the builder finds its interpreter.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: resolve and install the package and its dependencies into a venv -------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge/ ./bridge/
# Non-editable install (the source tree is not shipped), then byte-compile everything in the
# venv so the read-only root filesystem never needs a __pycache__ write.
RUN pip install --no-cache-dir . \
    && python -m compileall -q -j 0 /opt/venv/lib

# ---- runtime: slim Python, no build tools, non-root ---------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="norce-order-bridge" \
      org.opencontainers.image.description="Executes order commands from Kafka against the Norce Order API and publishes Avro order snapshots and events." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin bridge

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BRIDGE_SCHEMAS_DIR=/app/schemas

COPY --from=builder /opt/venv /opt/venv
COPY schemas/ /app/schemas/

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Exec form: the bridge is PID 1 and receives SIGTERM directly, which starts its graceful drain.
ENTRYPOINT ["order-bridge"]
CMD ["run"]

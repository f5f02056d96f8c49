# syntax=docker/dockerfile:1
# norce-order-bridge container image.
#   docker build -t norce-order-bridge:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%FT%TZ)" \
#     --build-arg SOURCE=https://<your git host>/norce-order-bridge .
# Both stages use the same pinned base so the venv copied from the builder finds its interpreter.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: install the locked dependencies and the package into a venv -----------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Reproducible: every dependency (and the build backend) is pinned with hashes in the lock
# files (`make lock`); pip refuses anything else. The build tools stay in a throwaway venv.
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes -r requirements.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes -r requirements-build.lock
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY bridge/ ./bridge/
# The wheel (schemas included as package data) from the pinned backend, installed without
# dependencies (all came from the lock), checked for consistency, then byte-compiled so the
# read-only root filesystem never needs a __pycache__ write.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /src/dist . \
    && pip install --no-cache-dir --no-deps /src/dist/norce_order_bridge-*.whl \
    && pip check \
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

# The Avro schemas ship inside the package (bridge/schemas); BRIDGE_SCHEMAS_DIR may override.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Exec form: the bridge is PID 1 and receives SIGTERM directly, which starts its graceful drain.
ENTRYPOINT ["order-bridge"]
CMD ["run"]

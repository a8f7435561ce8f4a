# syntax=docker/dockerfile:1
# calcinosis-cds production image (issue #8): `docker build -t calcinosis-cds .`
#
# Stage "build" makes the wheel and a virtualenv holding only that wheel and its dependencies; the runtime
# stage copies the virtualenv into a slim image and runs it as an unprivileged user. No secrets are baked in:
# all configuration (CDS_* variables, the database URL, the trusted-issuers file) comes from the environment
# and mounted files at run time -- see deploy/README.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, exactly as locked (issue #14): every file is checked against its sha256 in the lock, and
# --no-deps means nothing unlisted is pulled in. This layer is reused until a lock changes.
COPY requirements/runtime.txt requirements/build.txt requirements/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements/runtime.txt \
    && python -m venv /opt/build-tools \
    && /opt/build-tools/bin/pip install --require-hashes --no-deps -r requirements/build.txt
COPY pyproject.toml README.md ./
COPY cds_service/ cds_service/
COPY fhir_mappings/ fhir_mappings/
COPY cards/ cards/
COPY findings/ findings/
COPY synth/ synth/
# The wheel is built with the locked build backend (no isolated, unpinned download of hatchling) and installed
# without dependencies: they are all in the virtualenv already.
RUN /opt/build-tools/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-deps /dist/calcinosis_cds-*.whl \
    && /opt/venv/bin/pip check

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="calcinosis-cds" \
      org.opencontainers.image.description="CDS Hooks 2.0 service: calcinosis cutis and calciphylaxis risk" \
      org.opencontainers.image.licenses="Apache-2.0"
# CDS_HOST: listen on all interfaces inside the container. CDS_DATA_DIR holds the embedded SQLite database
# (single-instance use) and the per-pod audit spool. PROMETHEUS_MULTIPROC_DIR: metrics summed over workers.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDS_HOST=0.0.0.0 \
    CDS_PORT=8080 \
    CDS_DATA_DIR=/var/lib/calcinosis-cds \
    PROMETHEUS_MULTIPROC_DIR=/tmp/calcinosis-cds-metrics \
    WEB_CONCURRENCY=2
RUN groupadd --system --gid 10001 cds \
    && useradd --system --uid 10001 --gid cds --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin cds \
    && mkdir -p /var/lib/calcinosis-cds \
    && chown cds:cds /var/lib/calcinosis-cds
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# Numeric so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /var/lib/calcinosis-cds
EXPOSE 8080
# Liveness only (no dependency touched); python because slim images have no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDS_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["serve"]

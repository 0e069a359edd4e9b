# iterum-sidecar: the image the Iterum manager runs as the `sidecar` container of a step.
# Build: docker build -t iterum/sidecar-py:0.1.0 .   (then set the manager's SIDECAR_IMAGE)

# --- build: a virtualenv with the pinned, hash-checked dependencies --------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/sidecar \
 && /opt/sidecar/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY states ./states
RUN /opt/sidecar/bin/pip install --no-deps .

# --- runtime: no compiler, no pip cache, not root --------------------------------------
FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="iterum-sidecar" \
      org.opencontainers.image.description="Drop-in Python sidecar for Iterum pipeline steps"
COPY --from=build /opt/sidecar /opt/sidecar
# The transformation container must be able to use the files the sidecar creates on the
# shared volume (and the sidecar must delete the transformation's outputs): run both with
# the same uid, or give the pod an fsGroup (see docs/migration.md and deploy/).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sidecar
ENV PATH=/opt/sidecar/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# /metrics, /healthz, /readyz, /debug/fragments (SIDECAR_HTTP_PORT; 0 switches it off,
# auto takes any free port: then this check cannot know it and passes)
EXPOSE 9090
# For docker and compose (Kubernetes uses the probes in deploy/ instead). No curl in a slim
# image: a Python one-liner; an HTTP error (503) or no answer makes it fail.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; p = (os.environ.get('SIDECAR_HTTP_PORT') or '9090').strip().lower(); p in ('0', 'auto') or u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=3)"]
ENTRYPOINT ["iterum-sidecar"]

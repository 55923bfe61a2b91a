# zooscope production image: the API and the Celery worker run from this one image
# (docker-compose.yml picks the command). CPU build of torch; a GPU worker image would swap the
# torch index URL for a CUDA one (see the commented worker-gpu service in docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, pinned, from the PyTorch CPU index: otherwise pip resolves the multi-GB CUDA build
# for the plain "torch" requirement of pyproject.toml.
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

# A C compiler: zooscope builds its small first-layer kernel at run time (zooscope/population/kernels/,
# docs/internals.md); without one the population forward falls back to torch's slower ops.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/zooscope
# Dependencies change less often than code: install them in their own layer.
COPY pyproject.toml README.md ./
COPY zooscope/__init__.py zooscope/__init__.py
RUN pip install '.[service,mnist]' && pip uninstall -y zooscope

COPY zooscope ./zooscope
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations
# Editable: app.db.migrate finds migrations/ beside app/ in the source tree.
RUN pip install --no-deps -e .

# Non-root: the service never needs root, and a model-running process should not have it.
RUN useradd --create-home --uid 10001 zooscope \
    && mkdir -p /data && chown zooscope:zooscope /data
USER zooscope
ENV ZOOSCOPE_DATA_DIR=/data
# Idle connections kept 20 s, not uvicorn's 5: longer than the dashboard's poll intervals
# (worker/embedded.py, API_KEEP_ALIVE_S, says why).
ENV UVICORN_TIMEOUT_KEEP_ALIVE=20
VOLUME ["/data"]
EXPOSE 8000

# The API by default; the worker service overrides the command (docker-compose.yml).
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]

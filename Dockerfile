# digitstream: one image per role, built from this one file (docs/deploy.md).
#
#   docker build --target api    -t digitstream-api .      # `digitstream serve`; also the CLI (publish, status ...)
#   docker build --target worker -t digitstream-worker .   # `digitstream worker`: numba + river
#
# Dependencies are the hashed lock files of requirements/ (scripts/lock), installed with
# `pip --require-hashes --only-binary=:all:`: wheels only, so no compiler on amd64 or arm64. They come from
# PyPI (or --build-arg PIP_INDEX_URL=...), or offline from docker/wheels/ when it holds wheels.
#   BASE_IMAGE   the final images' base: any Debian-like image with python3 3.11 (pip, if it has one, is removed)
#   BUILD_IMAGE  the build stages' base (default BASE_IMAGE): the same python3, with its venv module and ensurepip
# The final images hold the virtual environment /opt/venv and nothing of the build: no pip, no setuptools, no
# wheelhouse, no compiler; they run as the unprivileged user digitstream (uid APP_UID).
#
# The classic builder builds every stage above the target, so the stages the API needs come first:
# `--target api` never installs the worker's dependencies.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm
ARG BUILD_IMAGE=${BASE_IMAGE}

# -- build stages -----------------------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# binutils' strip takes the debug info out of the wheels' libraries (prune.py); fetched when the build image
# lacks it and a Debian mirror answers, else the libraries keep it.
RUN command -v strip >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils \
        && rm -rf /var/lib/apt/lists/*; } || echo "no binutils: the libraries keep their debug info"
COPY docker/wheels/ /wheels/
COPY docker/build/ /opt/build-tools/
COPY requirements/ /opt/requirements/

# The project's own wheel, built without build isolation from the locked build backend.
FROM build-base AS wheel
ARG PIP_INDEX_URL
RUN python3 -m venv /opt/build \
    && /opt/build-tools/install-locked /opt/build -r /opt/requirements/build.txt
COPY pyproject.toml README.md LICENSE /src/
COPY digitstream/ /src/digitstream/
COPY worker/ /src/worker/
COPY service/ /src/service/
COPY clients/ /src/clients/
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /dist /src

FROM build-base AS api-venv
ARG PIP_INDEX_URL
# Pruned in the same step: what is deleted is never written to a layer (the classic builder is slow to write).
RUN python3 -m venv /opt/venv \
    && /opt/build-tools/install-locked /opt/venv -r /opt/requirements/api.txt \
    && /opt/venv/bin/python /opt/build-tools/prune.py --in-image --libraries /opt/venv/lib
COPY --from=wheel /dist/ /tmp/dist/
RUN /opt/venv/bin/python -m pip install --quiet --no-deps --no-index /tmp/dist/*.whl \
    && /opt/venv/bin/python /opt/build-tools/prune.py --in-image --build-tools

# -- what every final image shares --------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG APP_UID=10001
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY docker/build/prune.py /tmp/prune.py
# The base interpreter's own pip (python images have one) goes too: nothing can install into these images.
RUN python3 /tmp/prune.py --in-image --build-tools && rm /tmp/prune.py \
    && useradd --system --uid "${APP_UID}" --user-group --create-home --home-dir /var/lib/digitstream \
        --shell /usr/sbin/nologin digitstream \
    && install -d -o digitstream -g digitstream /etc/digitstream/redis
WORKDIR /var/lib/digitstream

# -- the API (also the CLI: publish, status, and the Redis configuration job of docker-compose.yml) ---------
FROM runtime AS api
COPY --from=api-venv /opt/venv /opt/venv
USER digitstream
# Every compiled part loads (after prune.py stripped them), and the API has none of the worker's.
RUN digitstream --version \
    && python -c "import numpy, PIL.Image, uvloop, httptools, orjson, pydantic_core, hiredis, digitstream.service.app" \
    && ! python -c "import numba" 2>/dev/null
EXPOSE 8000
ENTRYPOINT ["digitstream"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

# -- the worker -----------------------------------------------------------------------------------------------
FROM build-base AS worker-venv
ARG PIP_INDEX_URL
# Pruned in the same step: what is deleted is never written to a layer (the classic builder is slow to write).
RUN python3 -m venv /opt/venv \
    && /opt/build-tools/install-locked /opt/venv -r /opt/requirements/worker.txt \
    && /opt/venv/bin/python /opt/build-tools/prune.py --in-image --libraries /opt/venv/lib
COPY --from=wheel /dist/ /tmp/dist/
RUN /opt/venv/bin/python -m pip install --quiet --no-deps --no-index /tmp/dist/*.whl \
    && /opt/venv/bin/python /opt/build-tools/prune.py --in-image --build-tools

FROM runtime AS worker
# numba caches the learner's compiled kernels in NUMBA_CACHE_DIR, which must be writable (a tmpfs under a
# read-only root). They are compiled once at build time into /opt/digitstream/numba, and the entrypoint
# copies them there at start, so a container learns at full speed at once (one whose CPU differs from the
# build machine's compiles again).
ENV NUMBA_CACHE_DIR=/var/cache/digitstream/numba
COPY --from=worker-venv /opt/venv /opt/venv
COPY docker/warmup.py docker/worker-entrypoint /opt/digitstream/
RUN install -d -o digitstream -g digitstream /var/cache/digitstream/numba /opt/digitstream/numba
USER digitstream
RUN NUMBA_CACHE_DIR=/opt/digitstream/numba python /opt/digitstream/warmup.py && digitstream --version \
    && python -c "import river, scipy.special, digitstream.worker.loop"
ENTRYPOINT ["/opt/digitstream/worker-entrypoint"]
CMD ["worker"]

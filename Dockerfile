# digitstream: one image for the worker, the API and the CLI (see docs/deploy.md).
#
#   docker build -t digitstream .                                    # dependencies from PyPI
#   docker build --build-arg BASE_IMAGE=my/python3.11 -t digitstream .  # any Debian-like image with python3 + venv
#   offline: fill docker/wheels/ with wheels first (docker/wheels/README.md); pip then uses only those.
#
# Stages: deps makes /opt/venv with the dependencies; build turns the sources into a wheel (build tools and
# the wheelhouse stay behind); the final stage copies the venv onto a fresh base, installs that wheel, adds a
# non-root user and pre-compiles the numba kernels. Editing the sources rebuilds only the small layers.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN python3 -m venv /opt/venv
COPY docker/wheels/ /wheels/
COPY pyproject.toml /src/
# The dependencies alone: the big layer, rebuilt only when pyproject.toml or the wheelhouse changes.
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; \
        echo "installing from the wheelhouse only"; fi; \
    python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
        extras = p["optional-dependencies"]; \
        print("\n".join(p["dependencies"] + extras["worker"] + extras["serve"]))' > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --quiet -r /tmp/requirements.txt

FROM deps AS build
COPY README.md LICENSE /src/
COPY digitstream/ /src/digitstream/
COPY worker/ /src/worker/
COPY service/ /src/service/
COPY clients/ /src/clients/
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi; \
    /opt/venv/bin/pip wheel --quiet --no-deps --wheel-dir /dist /src

FROM ${BASE_IMAGE}
ARG APP_UID=10001
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/var/cache/digitstream/numba
RUN useradd --system --uid "${APP_UID}" --user-group --create-home --home-dir /var/lib/digitstream \
        --shell /usr/sbin/nologin digitstream \
    && mkdir -p /var/cache/digitstream/numba \
    && chown -R digitstream:digitstream /var/cache/digitstream
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /dist/ /tmp/dist/
RUN pip install --quiet --no-deps --no-index /tmp/dist/*.whl && rm -rf /tmp/dist && digitstream --version
COPY docker/warmup.py /opt/digitstream/warmup.py
USER digitstream
WORKDIR /var/lib/digitstream
RUN python /opt/digitstream/warmup.py
EXPOSE 8000
ENTRYPOINT ["digitstream"]
CMD ["--help"]

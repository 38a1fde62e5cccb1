# The cloudq worker for ECS (or any container platform).
#
#   docker build -t cloudq-worker .
#   docker run -e CLOUDQ_APP=cloudq.examples.shop:app -e AWS_REGION=eu-west-1 cloudq-worker [-q billing]
#
# Your own app: build FROM this image, COPY your package into /app, set CLOUDQ_APP=yourpkg.tasks:app.
#
# Two stages: the first builds a virtualenv in /opt/cloudq from the exact pins of requirements/runtime.txt
# (written by `make lock` for CPython 3.12 on Linux) and then cloudq itself; the second copies that venv onto a
# clean base, with no build context, pip cache or source tree. The base image is an exact release (Python
# 3.12.13 on Debian 13), the same Python minor the lock is resolved for; bump both together. .dockerignore sends
# only what the build copies.

FROM python:3.12.13-slim-trixie AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_REQUIRE_VIRTUALENV=1

RUN python -m venv /opt/cloudq
ENV PATH=/opt/cloudq/bin:$PATH
WORKDIR /src

# Dependencies get a layer of their own, rebuilt only when the lock changes, not on every code change.
# --no-deps: exactly the pinned set, nothing resolved at build time (pip check below proves it is complete).
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-deps --requirement requirements/runtime.txt

COPY pyproject.toml README.md LICENSE ./
COPY cloudq ./cloudq
RUN pip install --no-deps . \
    && pip check


FROM python:3.12.13-slim-trixie

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/cloudq/bin:$PATH

COPY --from=build /opt/cloudq /opt/cloudq
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cloudq
# `cloudq worker` imports CLOUDQ_APP with the working directory on sys.path: COPY your package here.
WORKDIR /app

# A non-root user; the worker writes only its heartbeat (and, with CLOUDQ_BROKER=local, its SQLite file) under /tmp.
USER 10001

ENV CLOUDQ_BROKER=sqs \
    CLOUDQ_LOG_FORMAT=json \
    CLOUDQ_HEARTBEAT_PATH=/tmp/cloudq-heartbeat \
    CLOUDQ_LOCAL_PATH=/tmp/cloudq/broker.db

# The worker rewrites its heartbeat every few seconds while its event loop runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["cloudq", "health", "--max-age", "60"]

# Exec form, no shell in between: SIGTERM from `docker stop` / ECS reaches the worker, which drains.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cloudq", "worker"]
CMD []

# The cloudq worker for ECS (or any container platform).
#
#   docker build -t cloudq-worker .
#   docker run -e CLOUDQ_APP=cloudq.examples.shop:app -e AWS_REGION=eu-west-1 cloudq-worker [-q billing]
#
# Your own app: build FROM this image, COPY your package in, set CLOUDQ_APP=yourpkg.tasks:app.

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies get a layer of their own, rebuilt only when pyproject.toml changes, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --requirement /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY cloudq ./cloudq
RUN pip install --no-deps . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cloudq

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

# One image for every ingest process; docker-compose.yml chooses the command of each service.

FROM python:3.11-slim-bookworm AS build
# mysqlclient has no Linux wheel: it compiles against the MariaDB client library.
# Versions come from the pinned Debian release; pinning each package would break on every point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config default-libmysqlclient-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY ingest_cli ./ingest_cli
COPY ingest_api ./ingest_api
COPY tasks ./tasks
COPY models ./models
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# Only the client library at run time; the compiler stays in the build stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin ingest
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /app
# `alembic upgrade head` runs from here; the code itself is installed in /opt/venv.
COPY alembic.ini ./
COPY alembic ./alembic
# Numeric, so that a host or orchestrator can tell it is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000 5555
# The API as `ingest serve` runs it everywhere: granian with ingest's defaults.
CMD ["ingest", "serve", "--bind", "0.0.0.0:8000", "--workers", "2"]

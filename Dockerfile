# The API and the worker share one image; docker-compose.yml picks the command.
# The base is pinned by digest (python:3.11.13-slim-bookworm), the dependencies by the hashes
# in requirements/runtime.lock: a rebuild gets the same bytes or fails.
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # `python -m integration` runs from /app: no install of the package itself, so the
    # migrations beside it are found and nothing unhashed is fetched to build it.
    PYTHONPATH=/app

WORKDIR /app
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip install --require-hashes --no-deps -r requirements/runtime.lock

COPY alembic.ini ./
COPY migrations ./migrations
COPY integration ./integration

# A user of its own, without a shell or a writable home; the code stays root-owned.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

EXPOSE 8000
CMD ["python", "-m", "integration", "serve", "--host", "0.0.0.0", "--port", "8000"]

# The API and the worker share one image; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md alembic.ini ./
COPY integration ./integration
COPY migrations ./migrations
RUN pip install --no-cache-dir -e .
USER nobody
EXPOSE 8000
CMD ["python", "-m", "integration", "serve", "--host", "0.0.0.0"]

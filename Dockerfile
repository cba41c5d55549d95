# The example project's image: the web app, the backfill worker and migrations all run it
# (see docker-compose.yml). Checked by tests/test_compose.py.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so that editing the code does not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# An unprivileged user; the code stays root-owned (read-only to it), only var/ is writable.
RUN useradd --create-home --uid 10001 app

COPY manage.py ./
COPY project ./project
COPY backfills ./backfills
COPY example ./example
RUN mkdir -p var && chown app:app var

USER app

EXPOSE 8000

CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]

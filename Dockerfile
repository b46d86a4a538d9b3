# syntax=docker/dockerfile:1
# Leaderboard service image: the React UI built with Node, the Python package (with its SQL migrations,
# which ship inside the wheel) installed into a slim Python image, run as a non-root user.
#
#   docker build -t leaderboard:latest .
#   docker run --env-file .env -p 8000:8000 leaderboard:latest

# --- 1. UI -------------------------------------------------------------------------------------------------
FROM node:20-bookworm-slim AS client
WORKDIR /src/client
COPY client/package.json client/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY client/ ./
RUN npm run build

# --- 2. Python wheels --------------------------------------------------------------------------------------
FROM python:3.11-slim AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ ./server/
COPY sql/ ./sql/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- 3. Runtime --------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LEADERBOARD_STATIC_DIR=/app/static \
    LEADERBOARD_DATA_DIR=/app/data \
    LEADERBOARD_LOG_FORMAT=json \
    LEADERBOARD_HOST=0.0.0.0 \
    LEADERBOARD_PORT=8000

RUN groupadd --system --gid 10001 leaderboard \
 && useradd --system --uid 10001 --gid leaderboard --home-dir /app --no-create-home leaderboard \
 && mkdir -p /app/data \
 && chown leaderboard:leaderboard /app/data

COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels leaderboard \
 && rm -rf /tmp/wheels

COPY --from=client /src/client/dist /app/static

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Ready = Postgres and Redis answer and migrations are applied (503 while draining).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=3)"]

# SIGTERM starts the graceful drain (close sockets with 1012, finish in-flight submissions).
STOPSIGNAL SIGTERM
CMD ["leaderboard", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]

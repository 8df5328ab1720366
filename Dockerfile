# otp-service: gunicorn + the Flask app, as an unprivileged user, on python:3.11-slim.
#   docker build -t otp-service .        (docker-compose.yml builds it too)
# Configuration is by environment only (docs/operations.md lists every variable); nothing secret is baked in.

# -- build: wheels of the service and its dependencies (no compiler needed: all ship manylinux wheels) --------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY otp_service ./otp_service
RUN pip wheel --wheel-dir /wheels .

# -- run -------------------------------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    OTP_ENV=production \
    OTP_BIND=0.0.0.0:8080 \
    OTP_GUNICORN_CONFIG=/app/gunicorn.conf.py \
    OTP_CQL_DIR=/app/cql \
    PROMETHEUS_MULTIPROC_DIR=/tmp/otp-metrics

RUN groupadd --system --gid 10001 otp \
 && useradd --system --uid 10001 --gid otp --home-dir /app --no-create-home --shell /usr/sbin/nologin otp
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels otp-service && rm -rf /wheels

WORKDIR /app
COPY gunicorn.conf.py ./
COPY cql ./cql

USER otp:otp
EXPOSE 8080
# /health answers 200 only while the store answers; urllib raises (exit 1) on 503 or no answer.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
# gunicorn stops gracefully on SIGTERM: workers finish their requests within OTP_GRACEFUL_TIMEOUT_SECONDS (20 s).
STOPSIGNAL SIGTERM
CMD ["otp-service", "serve"]

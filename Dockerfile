# One image for every role: web (gunicorn), coordinator worker, site worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch==2.13.0 from the default index pulls several GB of CUDA libraries; pass an
# index of CPU-only wheels here to keep the image small.
ARG PIP_EXTRA_INDEX_URL=
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Hashed, compressed static files (plotly.js among them) served by WhiteNoise.
RUN DJANGO_ENV=production SECRET_KEY=collectstatic-only ALLOWED_HOSTS=build VAR_DIR=/tmp/var \
    python manage.py collectstatic --noinput

RUN useradd --create-home --uid 1000 app && mkdir -p /app/var /data && chown -R app /app/var /data
USER app

ENV DJANGO_ENV=production \
    VAR_DIR=/app/var \
    CMAPSS_CACHE_DIR=/data/cmapss

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"
# Threads: each site's long poll for work holds one while it waits.
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "16", "--access-logfile", "-"]

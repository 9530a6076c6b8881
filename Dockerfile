# llmobs: a slim, non-root image. Build from the repository root: docker build -t llmobs .
FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md requirements.lock /src/
COPY src /src/src
# The tested set: the versions CI ran the suite with.
RUN pip install -c /src/requirements.lock /src

FROM python:3.11.13-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LLMOBS_HOST=0.0.0.0 \
    LLMOBS_PORT=4000
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin llmobs
USER 10001
EXPOSE 4000
# The slim image has no curl: probe /healthz with the Python that is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LLMOBS_PORT', '4000'), timeout=3)"]
ENTRYPOINT ["llmobs"]
CMD ["serve"]

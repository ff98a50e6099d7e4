# fwatchdog as a function container's entrypoint (Docker and Podman).
#
#   # fwatchdog and its dependencies as wheels, made by the Python of the base image:
#   docker run --rm -v "$PWD:/src" -w /src python:3.12-slim-bookworm pip wheel -w wheels .
#   docker build -t fwatchdog .                   # or: podman build --format docker -t fwatchdog .
#   docker run -p 8080:8080 -e fprocess="wc -c" fwatchdog
#
# pip stays (templates install a handler's requirements with it); setuptools goes (9 MB).
# The image installs only from the wheels in the build context (WHEELS), so the build needs no
# network and installs exactly what was built. BASE_IMAGE is any Debian-like image with
# python3 (3.11 or newer) and its venv module; the wheels must match its Python version.
# Templates (templates/*/Dockerfile) start FROM this image and add a handler.
ARG BASE_IMAGE=python:3.12-slim-bookworm
FROM ${BASE_IMAGE}

ARG WHEELS=wheels
ARG GIT_SHA=unknown

COPY ${WHEELS}/ /tmp/wheels/
RUN python3 -m venv /opt/fwatchdog \
    && /opt/fwatchdog/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        --disable-pip-version-check "fwatchdog[otel]" \
    && /opt/fwatchdog/bin/pip uninstall --yes --quiet setuptools \
    && rm -rf /tmp/wheels \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --home-dir /home/app app

# The venv first: `python3` in fprocess is the one that can import fwatchdog.function.
ENV PATH=/opt/fwatchdog/bin:$PATH \
    FWATCHDOG_GIT_SHA=${GIT_SHA} \
    PYTHONUNBUFFERED=1

USER app
WORKDIR /home/app

# fprocess, mode and every other setting come from the environment (ENV in a template, -e at
# run time, or the Kubernetes env list). The lock file is /tmp/.lock.
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["fwatchdog", "--run-healthcheck"]
# SIGTERM starts the drain: health fails at once, requests in flight finish, exit 0.
STOPSIGNAL SIGTERM
CMD ["fwatchdog"]

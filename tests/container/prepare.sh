#!/usr/bin/env bash
# The host side of `make test-container`: podman and its settings, a Debian base image made
# from Debian's packages (image registries are out of reach), and the wheels the images
# install offline. Each step is skipped when its result is already there, so a second run on
# the same machine only rebuilds the wheels.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=build/container
BASE_IMAGE=${BASE_IMAGE:-localhost/fwatchdog-test-base:bookworm}
PYTHON=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"

if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
    || ! command -v mmdebstrap >/dev/null; then
    echo "== installing podman runc mmdebstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap >/dev/null
fi

# The runtime's default rlimits exceed this machine's hard limits: starts would fail with
# "setrlimit ... Operation not permitted". Within `ulimit -H`, and nproc under 32768, the
# limit buildah's chroot isolation has already set when it applies these.
CONF=/etc/containers/containers.conf
at_most() { if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi; }
if ! grep -qs '^default_ulimits' "$CONF"; then
    echo "== $CONF: default_ulimits within ulimit -Hn/-Hu"
    nofile=$(at_most "$(ulimit -Hn)" 20000)
    nproc=$(at_most "$(ulimit -Hu)" 4096)
    limits="default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
    mkdir -p "$(dirname "$CONF")"
    if grep -qs '^\[containers\]' "$CONF"; then
        sed -i "/^\[containers\]/a $limits" "$CONF"
    else
        printf '[containers]\n%s\n' "$limits" >>"$CONF"
    fi
fi

if ! podman image exists "$BASE_IMAGE"; then
    echo "== base image $BASE_IMAGE: Debian bookworm minbase with its python3 (3.11)"
    # Without documentation, manual pages and translations, as slim Python images are.
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        bookworm "$OUT/base.tar"
    podman import --quiet "$OUT/base.tar" "$BASE_IMAGE" >/dev/null
    rm -f "$OUT/base.tar"
fi

# fwatchdog from this work tree and everything the images install, as wheels for Python 3.11
# (the base image's), so the image builds need no network.
echo "== wheels"
rm -rf "$OUT/wheels"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$OUT/wheels" \
    ".[otel]" -r templates/python3-flask-afterburn/function/requirements.txt
ls "$OUT/wheels"

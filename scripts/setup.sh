#!/usr/bin/env bash
# Create or refresh .venv with everything the project needs. Idempotent and quick when
# nothing changed: the install is skipped while pyproject.toml and constraints.txt keep
# the hash recorded by the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}

need_debian_package() {  # $1 = package, $2 = a file it provides
  if [ -e "$2" ] || dpkg -s "$1" >/dev/null 2>&1; then return 0; fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian package $1 (needed: $2)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
  else
    echo "setup: the Debian package '$1' is missing; install it (apt-get install $1) and rerun." >&2
    exit 1
  fi
}

# The Triton Python-backend stub links Debian's libpython3.11 (platform notes).
if command -v dpkg >/dev/null 2>&1; then
  need_debian_package libpython3.11 /usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0
fi

# The scale profile's tests start a real Redis and run Spark (pyspark needs a JVM).
if command -v dpkg >/dev/null 2>&1; then
  need_debian_package redis-server /usr/bin/redis-server
  if ! command -v java >/dev/null 2>&1; then
    need_debian_package openjdk-17-jre-headless /usr/lib/jvm/java-17-openjdk-amd64/bin/java
  fi
elif ! command -v redis-server >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  echo "setup: the scale tests need redis-server and a Java 17 runtime on PATH; install them and rerun." >&2
  exit 1
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; this project needs CPython 3.11." >&2
  exit 1
fi

want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$want"
if [ -f "$stamp" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "setup: installing the project into $VENV (first run takes a few minutes)"
# torch==2.13.0 is pinned in pyproject.toml: on x86-64 Linux pip takes the CPU wheel.
# (grep drops pip's warnings about this machine's optional local indexes; pip's own exit
# status decides.)
set +e
"$VENV/bin/python" -m pip install -q --disable-pip-version-check \
  -c constraints.txt -e '.[test,scale]' 2>&1 | grep -v "^WARNING: Location"
status=${PIPESTATUS[0]}
set -e
if [ "$status" != 0 ]; then
  echo "setup: pip install failed (exit $status); see the messages above." >&2
  exit "$status"
fi
"$VENV/bin/python" -m pip check
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "setup: done"

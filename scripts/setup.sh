#!/usr/bin/env bash
# The one install script: used by `make demo`, `make test`, CI and the docker images.
# Creates the virtual environment when missing and installs curate into it (editable),
# plus the system packages curate uses when they are missing and we can install them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# fonts-noto-cjk: report charts and pages show Chinese/Japanese/Korean captions (not empty boxes).
SYSTEM_PACKAGES="${CURATE_SYSTEM_PACKAGES:-wordnet-base chromium fonts-noto-cjk}"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  command -v java >/dev/null 2>&1 || missing="$missing openjdk-17-jre-headless"
  for pkg in $SYSTEM_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip wheel setuptools
fi
# Reinstall only when the project's requirements changed.
if [ ! -f "$VENV/.curate-installed" ] || [ pyproject.toml -nt "$VENV/.curate-installed" ]; then
  echo "setup: installing curate and its dependencies into $VENV"
  "$VENV/bin/pip" install -q -e ".[test]" ${CURATE_PIP_EXTRA:-}
  touch "$VENV/.curate-installed"
fi
# GPU images (docker/Dockerfile.gpu): CURATE_FAISS=gpu replaces faiss-cpu with the CUDA build,
# which provides the same `faiss` module (both installed at once would overwrite each other).
if [ "${CURATE_FAISS:-cpu}" = "gpu" ] && "$VENV/bin/pip" show -q faiss-cpu >/dev/null 2>&1; then
  echo "setup: replacing faiss-cpu with ${CURATE_FAISS_GPU_PACKAGE:-faiss-gpu-cu12}"
  "$VENV/bin/pip" uninstall -y -q faiss-cpu
  "$VENV/bin/pip" install -q "${CURATE_FAISS_GPU_PACKAGE:-faiss-gpu-cu12}"
fi
# Spark's driver JVM starts ~5 s faster from a class archive (curate/engine/jvm_archive.py);
# save it now, once, rather than at the end of the first job. Skipped when it exists.
if command -v java >/dev/null 2>&1; then
  "$VENV/bin/python" - <<'PY'
from curate.engine import jvm_archive
path = jvm_archive.default_archive()
if jvm_archive.enabled() and path is not None and not path.is_file():
    print(f"setup: saving the Spark JVM's class archive to {path.parent} (once, about 30 s)", flush=True)
    jvm_archive.warm()
PY
fi

#!/usr/bin/env bash
# Why this exists: the interop matrix runs the aiortc client (interop/aiortc/client.py) from a venv of its own, so
# the pinned aiortc and websockets never touch the system Python. Creates target/interop/aiortc-venv in the repo,
# installs the pins (quick no-op when already there) and prints the venv's python path as its last stdout line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/interop/aiortc-venv"
AIORTC_VERSION="1.16.0"
WEBSOCKETS_VERSION="15.0.1"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for c in /usr/bin/python3 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import venv, ensurepip' >/dev/null 2>&1; then py="$c"; break; fi
  done
fi
if [ -z "$py" ]; then
  # Debian: the venv module is split out.
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; })
    py=/usr/bin/python3
  else
    echo "setup.sh: no python3 with venv" >&2; exit 1
  fi
fi
stamp="$venv/.courier-pins"
want="aiortc==$AIORTC_VERSION websockets==$WEBSOCKETS_VERSION"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && "$venv/bin/python" -c 'import aiortc, websockets, av' >/dev/null 2>&1; then
  echo "$venv/bin/python"; exit 0
fi
mkdir -p "$(dirname "$venv")"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check -q $want >&2
"$venv/bin/python" -c 'import aiortc, websockets, av; print("aiortc", aiortc.__version__, "av", av.__version__, file=__import__("sys").stderr)'
echo "$want" > "$stamp"
echo "$venv/bin/python"

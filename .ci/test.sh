#!/usr/bin/env bash
# The test command: sets up (or reuses) the local ComfyUI host, then runs the whole suite with the
# host's Python: unit tests and the server tests against a real ComfyUI with the pack loaded.
# Extra arguments go to pytest, e.g. `bash .ci/test.sh tests/unit -x` or `-m "not full_model"`.
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${VIDEOGRAIN_HOST:-$PACK_DIR/.host}"

bash "$PACK_DIR/.ci/setup_host.sh" --test-extras

cd "$PACK_DIR"
# Inside an existing ComfyUI checkout the setup script only installs requirements; the tests still
# need the standalone host (the server fixture starts it), so say so instead of failing later.
if [ ! -x "$HOST/venv/bin/python" ]; then
    echo "[videograin] no standalone host at $HOST: set VIDEOGRAIN_HOST to a host made by .ci/setup_host.sh" >&2
    exit 2
fi
# The frontend tests drive ComfyUI's real UI in Debian's Chromium (playwright never downloads a browser).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[videograin] installing Debian's chromium for the frontend tests"
    { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
        || echo "[videograin] could not install chromium: the frontend tests will say so" >&2
fi
if [ "$#" -eq 0 ]; then
    set -- tests
fi
exec "$HOST/venv/bin/python" -m pytest -q --durations=15 "$@"

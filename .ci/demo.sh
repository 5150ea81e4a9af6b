#!/usr/bin/env bash
# The demo command: sets up (or reuses) the local ComfyUI host, starts its server, runs an API
# workflow through it and prints where the output video is.
#
#   bash .ci/demo.sh                                   # the bundled mask-check workflow
#   bash .ci/demo.sh WORKFLOW.json --set 1.frame_load_cap=8
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${VIDEOGRAIN_HOST:-$PACK_DIR/.host}"
DEFAULT="$PACK_DIR/workflows/api/videograin_mask_check.json"

bash "$PACK_DIR/.ci/setup_host.sh"

if [ "$#" -eq 0 ] || [[ "$1" == --* ]]; then
    set -- "$DEFAULT" "$@"
fi
if [ "$1" = "$DEFAULT" ]; then
    echo "[videograin] demo: the bundled synthetic clip (two walking figures) with each region mask" \
         "(class, instance and part level) tinted and outlined, saved as an mp4"
fi
exec "$HOST/venv/bin/python" "$PACK_DIR/.ci/run_workflow.py" "$@"

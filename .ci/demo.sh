#!/usr/bin/env bash
# The demo command: sets up (or reuses) the local ComfyUI host, starts its server, runs an API
# workflow through it and prints where the output video is.
#
#   bash .ci/demo.sh                                   # the instance-level edit of the bundled clip
#   bash .ci/demo.sh workflows/api/videograin_part_edit.json --set 2.frame_load_cap=8
#
# Real SD1.5 weights in .host/base/models/checkpoints/ are used at full size and 50 steps; without
# them the tiny random-weight model runs at 192 px and 20 steps (noise, but the whole pipeline).
set -euo pipefail

PACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOST="${VIDEOGRAIN_HOST:-$PACK_DIR/.host}"
DEFAULT="$PACK_DIR/workflows/api/videograin_instance_edit.json"

bash "$PACK_DIR/.ci/setup_host.sh"

if [ "$#" -eq 0 ] || [[ "$1" == --* ]]; then
    set -- "$DEFAULT" "$@"
fi
if [ "$1" = "$DEFAULT" ]; then
    echo "[videograin] demo: instance-level edit of the bundled synthetic clip (two walking figures):" \
         "the left figure becomes 'astronaut', the right one 'knight', the background 'cherry blossoms'," \
         "each region bound to its own words of one global prompt; plus a video of each prompt's attention"
fi
exec "$HOST/venv/bin/python" "$PACK_DIR/.ci/run_workflow.py" --auto-checkpoint "$@"

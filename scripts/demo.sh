#!/usr/bin/env bash
# The README's main job on embedded defaults. Usage: scripts/demo.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
export ONEPIECE_DATA="$DATA"
.venv/bin/onepiece world --out "$DATA" --seed 7 --users 2000 --items 5000 --queries 300 --days 8

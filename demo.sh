#!/usr/bin/env bash
# Quick start, part one: set everything up, then train the demo agents and write TensorBoard runs under runs/.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
.venv/bin/rl demo "$@"

#!/usr/bin/env bash
# Quick start, part two: set everything up, then run the test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
# One pytest worker per core (two on CI), each test file kept on one worker so that its module fixtures (the warm
# language models) are built once; RL_TEST_WORKERS=0 runs everything in this one process.
.venv/bin/python -m pytest -q -n "${RL_TEST_WORKERS:-auto}" --dist loadfile "$@"

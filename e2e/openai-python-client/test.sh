#!/usr/bin/env bash
# Runs this scenario alone: `fleetserve serve` in a subprocess, queried with the official openai client.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/pytest -q e2e/openai-python-client "$@"

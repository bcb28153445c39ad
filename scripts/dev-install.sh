#!/usr/bin/env bash
# Re-links the editable install after adding or removing a module. The install is "strict" (a tree of links
# under build/) because operator/ is a namespace folder without __init__.py, which setuptools' lenient
# editable finder cannot map; flock keeps parallel re-installs from clobbering each other.
set -euo pipefail
cd "$(dirname "$0")/.."
exec flock .venv/.dev-install.lock .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . \
    --config-settings editable_mode=strict 2>&1 | grep -vE "^WARNING: Location|^ *$" | grep -iE "error" || true

#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv. Idempotent: a second run only
# checks that the installed set matches pyproject.toml and the pins, and returns in a second.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.coinfer-installed
want="$(cat pyproject.toml requirements/pins-local.txt | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "coinfer: setting up .venv (first run: about 3 minutes, PyTorch is large)" >&2
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
# The pins hold torch/torchvision to the versions this project's machines carry locally; other
# machines can drop '-c requirements/pins-local.txt' and get any version pyproject.toml allows.
# pip's own chatter goes to a log, shown only if the install fails.
log=.venv/install.log
if ! .venv/bin/python -m pip install -c requirements/pins-local.txt -e ".[all,dev]" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2
    echo "coinfer: the install failed; the full log is $log" >&2
    exit 1
fi
echo "$want" > "$stamp"

#!/usr/bin/env bash
# Set up if needed, then run the demo: capture resnet18, profile it, and cost baseline plans on
# the phone -> edge -> cloud preset.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/coinfer demo "$@"

#!/usr/bin/env bash
# The scale benchmark, one command: ZopilotGPU vs Kueue v0.17.0 (minimalkueue)
# on 100 simulated RTX 4090 nodes, 1,000 jobs each. See bench/scale/scale.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bash "$root/bench/scale/build-kueue.sh" >/dev/null
exec "$root/.venv/bin/python" "$root/bench/scale/scale.py" "$@"

#!/usr/bin/env bash
# `make test`: every test on a fresh machine. The container images (dev/images.sh
# save: network and disk bound) build beside dev/install-deps.sh (CPU bound: the
# Go-built control plane), then doctor, ruff and mypy; pytest runs once both are
# done. pytest's exit 5 ("no tests collected") fails the run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
logs="${ZOPILOT_CACHE:-$HOME/.cache/zopilot}/logs"
mkdir -p "$logs"
images_log="$logs/images-save.log"
dev/images.sh save >"$images_log" 2>&1 &
images=$!
# Whatever happens below, the background build does not outlive this script.
trap 'kill "$images" 2>/dev/null || true' EXIT
bash dev/install-deps.sh
.venv/bin/python -m zopilot_worker.doctor
.venv/bin/ruff check .
.venv/bin/mypy
if ! wait "$images"; then
  echo "error: building the images failed (dev/images.sh save); the end of $images_log:" >&2
  tail -n 40 "$images_log" >&2
  exit 1
fi
trap - EXIT
grep '^\[images\]' "$images_log" | tail -n 5 >&2 || true
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
if ((rc == 5)); then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"

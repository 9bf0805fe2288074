#!/usr/bin/env bash
# Which commit moved the scale figures: ours alone (backlog scenario), once per
# given revision, with that revision's operator package first on PYTHONPATH
# (the benchmark, the cluster and the rest stay this tree's).
#
#   bench/scale/levers.sh REV [REV...]    (HEAD: this tree as it is)
#
# Each revision is checked out in a temporary git worktree, removed afterwards.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
work="$(mktemp -d)"
cleanup() {
  for wt in "$work"/*/; do [[ -d "$wt" ]] && git worktree remove --force "$wt" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
for rev in "$@"; do
  path=""
  if [[ "$rev" != HEAD ]]; then
    git worktree add --detach -q "$work/$rev" "$rev"
    path="$work/$rev/operator/src:$work/$rev/common/src"
  fi
  row="$(PYTHONPATH="$path" bench/scale/run.sh --only ours --live 0 | grep '^| backlog' | tail -n 1)"
  echo "$rev $(git rev-parse --short "$rev") $row"
done

#!/usr/bin/env bash
# Builds Kueue's scheduler-only minimalkueue from the Go module proxy, the way
# dev/tools.sh builds the control plane: into a cache outside the repository,
# keyed by version, reused when present. Its CRDs come from the same module
# (config/components/crd/bases in the module zip).
#
#   bench/scale/build-kueue.sh          build if missing, print the directory
#   bench/scale/build-kueue.sh --print  print the directory only
#
# Output: $ZOPILOT_CACHE/bin/kueue-$KUEUE_VERSION/{minimalkueue,crd/*.yaml}.
# Not part of `make test`; only bench/scale/run.sh needs it.
set -euo pipefail
KUEUE_VERSION="${KUEUE_VERSION:-v0.17.0}"
cache="${ZOPILOT_CACHE:-$HOME/.cache/zopilot}"
out="$cache/bin/kueue-$KUEUE_VERSION"
if [[ "${1:-}" == "--print" ]]; then echo "$out"; exit 0; fi
log() { printf '[kueue] %s\n' "$*" >&2; }
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0
mkdir -p "$out"
if [[ ! -x "$out/minimalkueue" ]]; then
  log "building sigs.k8s.io/kueue/test/performance/scheduler/minimalkueue@$KUEUE_VERSION (~2 min with a warm Kubernetes build cache)"
  GOBIN="$out" nice -n 10 go install -ldflags "-s -w" \
    "sigs.k8s.io/kueue/test/performance/scheduler/minimalkueue@$KUEUE_VERSION"
fi
if [[ ! -f "$out/crd/.complete" ]]; then
  dir="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  mkdir -p "$out/crd"
  cp "$dir"/config/components/crd/bases/*.yaml "$out/crd/"
  chmod u+w "$out"/crd/*.yaml
  touch "$out/crd/.complete"
fi
echo "$out"

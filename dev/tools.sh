#!/usr/bin/env bash
# Builds the real control-plane and node binaries from Go modules into a cache outside
# the repository, keyed by version, and reuses them when present.
#
#   dev/tools.sh            build what is missing, print the bin directory
#   dev/tools.sh --print    print the bin directory only (no build)
#
# Nothing is downloaded except through the Go module proxy. Cache root:
# $ZOPILOT_CACHE (default ~/.cache/zopilot).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${ZOPILOT_CACHE:-$HOME/.cache/zopilot}"
bin="$cache/bin"
mkdir -p "$bin" "$cache/src"
log() { printf '[tools] %s\n' "$*" >&2; }

if [[ "${1:-}" == "--print" ]]; then echo "$bin"; exit 0; fi
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)

# build_kube: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# and the kubelet (the real nodes' node agent) from k8s.io/kubernetes. Its go.mod replaces the k8s.io/* staging modules with
# ./staging paths that do not exist in the module zip; we derive "=> k8s.io/X
# v0.MINOR.PATCH" lines from that release's own go.mod rather than by hand.
build_kube() {
  local v="$KUBE_VERSION"
  local d="$cache/src/kube-$v" out="$bin/kube-$v"
  local c missing=0
  for c in "${KUBE_CMDS[@]}"; do [[ -x "$out/$c" ]] || missing=1; done
  [[ $missing == 0 ]] && return
  log "building Kubernetes $v (cold: ~15-25 min on 2 cores)"
  mkdir -p "$d" "$out"
  local staging="v0.${v#v1.}"
  (
    cd "$d"
    [[ -f go.mod ]] || go mod init zopilot.dev/kubebin >/dev/null 2>&1
    local modfile
    modfile="$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    go mod edit -go="$(awk '/^go /{print $2}' "$modfile")"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile" | while read -r m; do
      go mod edit -replace="$m=$m@$staging"
    done
    cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    go get "k8s.io/kubernetes@$v" >/dev/null
    go mod tidy >/dev/null
    local minor="${v#v1.}"; minor="${minor%%.*}"
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "${KUBE_CMDS[@]}"; do
      [[ -x "$out/$c" ]] && continue
      log "  go build $c"
      go build -ldflags "$ld" -o "$out/$c.tmp" "k8s.io/kubernetes/cmd/$c" && mv "$out/$c.tmp" "$out/$c"
    done
  )
}

# build_etcd: etcd's own `go install` fails on its replace lines, so a tiny
# wrapper module calls go.etcd.io/etcd/server/v3/etcdmain.Main.
build_etcd() {
  local v="$ETCD_VERSION"
  local d="$cache/src/etcd-$v" out="$bin/etcd-$v"
  [[ -x "$out/etcd" ]] && return
  log "building etcd $v"
  mkdir -p "$d" "$out"
  (
    cd "$d"
    [[ -f go.mod ]] || go mod init zopilot.dev/etcdbin >/dev/null 2>&1
    cat > main.go <<'GO'
// Command etcd runs the etcd server from go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@$v" >/dev/null
    go mod tidy >/dev/null
    go build -ldflags "-s -w" -o "$out/etcd.tmp" . && mv "$out/etcd.tmp" "$out/etcd"
  )
}

# build_gobin NAME VERSION PKG... : plain `go install` into a versioned dir.
build_gobin() {
  local name="$1" v="$2" ldflags="$3"; shift 3
  local out="$bin/$name-$v" missing=0 p
  for p in "$@"; do [[ -x "$out/$(basename "$p")" ]] || missing=1; done
  [[ $missing == 0 ]] && return
  log "building $name $v"
  mkdir -p "$out"
  for p in "$@"; do
    GOBIN="$out" go install -ldflags "$ldflags" "$p@$v"
  done
}

# build_monitoring_crds: prometheus-operator's CRDs generated from its Go API
# types (module .../pkg/apis/monitoring) by controller-gen, into
# $cache/crds/prometheus-operator-<version>/ (the chart tests' dry-runs).
build_monitoring_crds() {
  local v="$PROMETHEUS_OPERATOR_VERSION" cg="$CONTROLLER_TOOLS_VERSION"
  local d="$cache/src/monitoring-crds-$v" out="$cache/crds/prometheus-operator-$v"
  local api="github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring"
  [[ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]] && return
  build_gobin controller-gen "$cg" "-s -w" sigs.k8s.io/controller-tools/cmd/controller-gen
  log "generating prometheus-operator $v CRDs with controller-gen $cg"
  mkdir -p "$d"
  (
    cd "$d"
    [[ -f go.mod ]] || go mod init zopilot.dev/monitoringcrds >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport _ "%s/v1"\n' "$api" > tools.go
    go get "$api@$v" >/dev/null
    go mod tidy >/dev/null
    rm -rf "$out.tmp"
    "$bin/controller-gen-$cg/controller-gen" crd:crdVersions=v1 "paths=$api/v1" "output:crd:dir=$out.tmp"
    rm -rf "$out" && mv "$out.tmp" "$out"
  )
}

# build_local NAME DIR: a static binary from an in-repo Go module without
# dependencies (dev/pause, dev/testbox), cached by a hash of its sources.
build_local() {
  local name="$1" src="$here/$2" h out
  h="$(cat "$src"/go.mod "$src"/*.go | sha256sum | cut -c1-12)"
  out="$bin/$name-$h"
  [[ -x "$out/$name" ]] && { ln -sfn "../$name-$h/$name" "$bin/current/$name"; return; }
  log "building $name ($2)"
  mkdir -p "$out"
  (cd "$src" && go build -ldflags "-s -w" -o "$out/$name.tmp" . && mv "$out/$name.tmp" "$out/$name")
  ln -sfn "../$name-$h/$name" "$bin/current/$name"
}

build_kube
build_etcd
build_monitoring_crds
build_gobin kwok "$KWOK_VERSION" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
  sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
build_gobin helm "$HELM_VERSION" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  helm.sh/helm/v3/cmd/helm

# Stable names in one directory, so callers need only one PATH entry.
mkdir -p "$bin/current"
ln -sfn "../kube-$KUBE_VERSION/kube-apiserver" "$bin/current/kube-apiserver"
ln -sfn "../kube-$KUBE_VERSION/kube-controller-manager" "$bin/current/kube-controller-manager"
ln -sfn "../kube-$KUBE_VERSION/kube-scheduler" "$bin/current/kube-scheduler"
ln -sfn "../kube-$KUBE_VERSION/kubectl" "$bin/current/kubectl"
ln -sfn "../kube-$KUBE_VERSION/kubelet" "$bin/current/kubelet"
ln -sfn "../etcd-$ETCD_VERSION/etcd" "$bin/current/etcd"
ln -sfn "../kwok-$KWOK_VERSION/kwok" "$bin/current/kwok"
ln -sfn "../kwok-$KWOK_VERSION/kwokctl" "$bin/current/kwokctl"
ln -sfn "../helm-$HELM_VERSION/helm" "$bin/current/helm"
# The real nodes' sandbox image binary and the test image's binary.
build_local pause pause
build_local testbox testbox
echo "$bin/current"

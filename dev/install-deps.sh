#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh machine:
#   1. Debian packages: Prometheus + promtool; for the real nodes containerd,
#      runc, the CNI plugins and iproute2 (installed only: containerd's own
#      service is never started, dev/cluster runs its own instances),
#   2. uv and the Python workspace from uv.lock (NumPy 2 stack, frozen),
#   3. the Go-built control-plane binaries (dev/tools.sh, cached by version).
# Idempotent and quick when everything is already there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[deps] %s\n' "$*" >&2; }
UV_VERSION=0.13.9

apt_pkgs=()
command -v prometheus >/dev/null || apt_pkgs+=(prometheus)
command -v promtool >/dev/null || apt_pkgs+=(prometheus)
command -v containerd >/dev/null || apt_pkgs+=(containerd)
command -v runc >/dev/null || apt_pkgs+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
  || apt_pkgs+=(containernetworking-plugins)
command -v ip >/dev/null || apt_pkgs+=(iproute2)
command -v nsenter >/dev/null && command -v findmnt >/dev/null || apt_pkgs+=(util-linux mount)
if ((${#apt_pkgs[@]})); then
  log "installing Debian packages: ${apt_pkgs[*]}"
  bash dev/apt-install.sh "${apt_pkgs[@]}"
fi

if ! command -v uv >/dev/null || [[ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]]; then
  log "installing uv $UV_VERSION"
  python3 -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
log "syncing the Python workspace (uv.lock, frozen)"
# Bytecode compiled once here, as the images do (UV_COMPILE_BYTECODE): with
# PYTHONDONTWRITEBYTECODE set (CI shells often set it) every process would
# otherwise compile torch, kopf and the rest from source at each start.
uv sync --all-packages --frozen --quiet --compile-bytecode

log "building/reusing the control-plane binaries"
bash dev/tools.sh >/dev/null
log "ready"

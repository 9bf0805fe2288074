#!/usr/bin/env bash
# Builds the project's container images with podman, confined to one state dir.
#
#   dev/images.sh build [NAME...]  build base (if missing), then operator, fakeworker, worker
#                         (idempotent; the build stages stay tagged as NAME-build for the cache)
#   dev/images.sh save    build, then export each image as an OCI archive; prints "name path"
#   dev/images.sh names   print the image names, one a line
#   dev/images.sh podman ARGS...   run podman against this state dir (smoke tests, inspection)
#   dev/images.sh dir     print the state dir
#   dev/images.sh clean   remove the whole state dir (images, build cache, archives)
#
# State dir: $ZOPILOT_IMAGES_DIR (default ${ZOPILOT_CACHE:-~/.cache/zopilot}/images). Podman's
# storage, run dir, temp dir (where buildah keeps RUN --mount=type=cache dirs, i.e. uv's
# wheel cache), config and the archives all live there; nothing host-wide is configured.
# Podman runs with cgroupfs and runc, host network for builds only (no bridge is created),
# in a mount namespace where the few fixed host paths it writes are redirected (confined).
#
# Base image: $PYTHON_IMAGE if set (e.g. python:3.11-slim-bookworm where a registry is
# reachable); otherwise one is assembled here from Debian packages (mmdebstrap bookworm
# minbase + python3) and imported as localhost/zopilot/python-base:3.11-bookworm.
#
# Egress TLS: the host's CA bundle ($ZOPILOT_BUILD_CA, else $SSL_CERT_FILE,
# $REQUESTS_CA_BUNDLE, /etc/ssl/certs/ca-certificates.crt) is passed as build secret "ca";
# it is mounted only for the RUN steps that download and never lands in an image.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
state="${ZOPILOT_IMAGES_DIR:-${ZOPILOT_CACHE:-$HOME/.cache/zopilot}/images}"
base_tag="localhost/zopilot/python-base:3.11-bookworm"
tag="${ZOPILOT_IMAGE_TAG:-dev}"
# name -> Dockerfile (relative to the repository root, which is the build context)
declare -A dockerfile=(
  [worker]=Dockerfile.worker
  [operator]=Dockerfile.operator
  [fakeworker]=dev/Dockerfile.fakeworker
)
order=(operator fakeworker worker)
log() { printf '[images] %s\n' "$*" >&2; }
image_name() { echo "localhost/zopilot/$1:$tag"; }

# Debian packages this script needs; installed when missing (apt-get update first).
ensure_packages() {
  local missing=() cmd pkg
  for pair in podman:podman buildah:buildah mmdebstrap:mmdebstrap runc:runc newuidmap:uidmap; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [[ -e /usr/share/containers/storage.conf ]] || missing+=(containers-storage)
  ((${#missing[@]})) || return 0
  log "installing Debian packages: ${missing[*]}"
  bash "$here/apt-install.sh" "${missing[@]}"
}

# Podman's config, all under $state: no file in /etc is read for storage or registries.
write_config() {
  mkdir -p "$state"/{root,run,tmp,libpod,net,oci,base,logs}
  cat >"$state/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$state/root"
runroot = "$state/run"
EOF
  cat >"$state/containers.conf" <<EOF
[containers]
# The host's hard nofile limit is below podman's default (1048576): setting that fails.
default_ulimits = ["nofile=16384:16384", "nproc=8192:8192"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
tmp_dir = "$state/libpod"
[network]
network_config_dir = "$state/net"
EOF
  cat >"$state/registries.conf" <<'EOF'
# Short names (python:3.11-slim-bookworm) resolve to Docker Hub where one is reachable.
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
}

export CONTAINERS_CONF="$state/containers.conf"
export CONTAINERS_STORAGE_CONF="$state/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$state/registries.conf"
# buildah keeps RUN --mount=type=cache dirs (uv's cache) and image copies under $TMPDIR.
export TMPDIR="$state/tmp"

podman_args=(--root "$state/root" --runroot "$state/run" --tmpdir "$state/libpod"
  --cgroup-manager cgroupfs --runtime runc --events-backend file)

# Runs a command in a private mount namespace whose /var/lib and /run are copy-on-write
# overlays, their writes landing in a throwaway dir under $state: whatever --root says,
# podman writes /var/lib/containers/cache (image blob-info cache) and runc /run/runc.
confined() {
  local u rc=0
  u="$(mktemp -d "$state/host.XXXXXX")"
  mkdir -p "$u"/{lib,run}/{upper,work}
  unshare --mount --propagation private -- bash -c '
    mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$1/lib/upper,workdir=$1/lib/work" /var/lib &&
    mount -t overlay overlay -o "lowerdir=/run,upperdir=$1/run/upper,workdir=$1/run/work" /run &&
    shift && exec "$@"' _ "$u" "$@" || rc=$?
  rm -rf "$u"
  return "$rc"
}
pm() { confined podman "${podman_args[@]}" "$@"; }

host_ca() {
  local f
  for f in "${ZOPILOT_BUILD_CA:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" \
    /etc/ssl/certs/ca-certificates.crt; do
    if [[ -n "$f" && -s "$f" ]]; then echo "$f"; return; fi
  done
  # No bundle: an empty secret, which the Dockerfiles read as "use the image's own CAs".
  : >"$state/no-ca.pem"
  echo "$state/no-ca.pem"
}

build_base() {
  if [[ -n "${PYTHON_IMAGE:-}" ]]; then echo "$PYTHON_IMAGE"; return; fi
  if pm image exists "$base_tag"; then echo "$base_tag"; return; fi
  log "assembling $base_tag from Debian bookworm (mmdebstrap minbase + python3)"
  local tar="$state/base/python-base-bookworm.tar" t0=$SECONDS
  # netbase and tzdata: as in the official python image. passwd: useradd in the Dockerfiles.
  confined nice -n 10 mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-pip,ca-certificates,netbase,tzdata,passwd \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main"
  pm import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tar" "$base_tag" >/dev/null
  rm -f "$tar"
  log "base image ready in $((SECONDS - t0)) s"
  echo "$base_tag"
}

# One podman build, logged to $state/logs; the tail of the log on failure.
podman_build() {
  local name="$1" log="$state/logs/$1.log"; shift
  # The machine is shared: builds run at low priority.
  if ! confined nice -n 10 podman "${podman_args[@]}" build --layers --network host \
    --pull=never "$@" -f "$repo/${dockerfile[$name]}" "$repo" >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    log "building $name failed; full log: $log"
    exit 1
  fi
}

build() {
  local base ca name t0 args
  base="$(build_base)"
  ca="$(host_ca)"
  for name in "${@:-${order[@]}}"; do
    [[ -n "${dockerfile[$name]:-}" ]] || { log "unknown image '$name' (known: ${order[*]})"; exit 2; }
    t0=$SECONDS
    args=(--build-arg "PYTHON_IMAGE=$base" --secret "id=ca,src=$ca")
    log "building $(image_name "$name") from ${dockerfile[$name]} on $base"
    : >"$state/logs/$name.log"
    # The build stages (uv, our wheels) are tagged too (NAME-build:TAG), so that pruning
    # dangling images keeps them and a warm build reuses them.
    if grep -q '^FROM .* AS wheels$' "$repo/${dockerfile[$name]}"; then
      podman_build "$name" "${args[@]}" --target wheels -t "$(image_name "$name-build")"
    fi
    podman_build "$name" "${args[@]}" -t "$(image_name "$name")"
    log "$(image_name "$name") built in $((SECONDS - t0)) s"
  done
  # Images that lost their tag to a rebuild, with their layers (the tagged ones stay).
  pm image prune --force >/dev/null
}

save() {
  local name out
  for name in "${order[@]}"; do
    out="$state/oci/$name.oci.tar"
    # Re-export only when the image changed since the archive was written.
    local id
    id="$(pm image inspect --format '{{.Id}}' "$(image_name "$name")")"
    if [[ ! -s "$out" || "$(cat "$out.id" 2>/dev/null)" != "$id" ]]; then
      rm -f "$out"
      # Uncompressed layers: gzip of the 6.9 GB worker takes many minutes on 2 cores, and
      # the archive is only read locally (containerd import).
      pm save --quiet --uncompressed --format oci-archive -o "$out" "$(image_name "$name")"
      echo "$id" >"$out.id"
    fi
    echo "$(image_name "$name") $out"
  done
}

case "${1:-build}" in
  build) shift || true; ensure_packages; write_config; build "$@" ;;
  save) ensure_packages; write_config; build; save ;;
  names) for n in "${order[@]}"; do image_name "$n"; done ;;
  podman) shift; write_config; pm "$@" ;;
  dir) echo "$state" ;;
  clean)
    # Overlay mounts left by an interrupted build would keep files busy: unmount them first.
    if [[ -d "$state" ]]; then
      findmnt -rn -o TARGET | grep -F "$state/" | sort -r | xargs -r -n1 umount || true
    fi
    rm -rf "$state" ;;
  *) log "usage: dev/images.sh build [worker|operator|fakeworker]... | save | names | podman ARGS | dir | clean"; exit 2 ;;
esac

#!/usr/bin/env bash
# apt-install.sh PKG...: install Debian packages, one apt run at a time.
#
# `make test` runs dev/install-deps.sh and dev/images.sh side by side, and on a
# fresh machine both install packages. apt's DPkg::Lock::Timeout waits for the
# dpkg lock but not for the lists lock that `apt-get update` takes, so the second
# update failed at once ("Could not get lock /var/lib/apt/lists/lock"). One flock
# around update + install makes the second caller wait its turn instead.
set -euo pipefail
(($#)) || exit 0
sudo_=""; [[ $(id -u) == 0 ]] || sudo_="sudo"
mapfile -t pkgs < <(printf '%s\n' "$@" | sort -u)
exec 9>/tmp/zopilot-apt.lock  # fixed path: callers set their own TMPDIR
flock 9
$sudo_ apt-get update -qq -o DPkg::Lock::Timeout=600
DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends \
  -o DPkg::Lock::Timeout=600 "${pkgs[@]}" >/dev/null

#!/usr/bin/env bash
# Install the Debian packages a part of the local cluster needs, when they are missing.
#
#   hack/system-packages.sh PACKAGE...      e.g. hack/system-packages.sh postgresql buildah
#
# Installed packages are left alone (a second run takes a fraction of a second). Missing ones
# are installed with apt-get when this runs as root on Debian or Ubuntu; otherwise the script
# fails and names them, with the command that would install them.
set -euo pipefail

say() { printf '[packages] %s\n' "$*" >&2; }

(( $# )) || { say "usage: $0 PACKAGE..."; exit 2; }

missing=()
for pkg in "$@"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$pkg")
done
(( ${#missing[@]} )) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  say "missing Debian packages: ${missing[*]}"
  say "install them as root: apt-get install -y --no-install-recommends ${missing[*]}"
  exit 1
fi

say "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
  # the package lists may be stale or absent on a new machine: refresh them once and retry
  if ! { apt-get update >>"$log" 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >>"$log" 2>&1; }; then
    say "FAILED to install ${missing[*]}; last lines of the apt-get log:"
    tail -n 20 "$log" | sed 's/^/    /' >&2
    rm -f "$log"
    exit 1
  fi
fi
rm -f "$log"
say "installed ${missing[*]}"

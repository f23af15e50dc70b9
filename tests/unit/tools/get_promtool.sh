#!/usr/bin/env bash
# Print the path of a promtool binary, fetching it first when needed.
#
# promtool ships in Debian's `prometheus` package, but installing that package also starts a
# Prometheus server (its postinst starts the unit or the init script). So the package is only
# downloaded (apt-get download, from the configured Debian mirror) and unpacked into the cache;
# promtool needs nothing but libc. Usage: get_promtool.sh [CACHE_DIR] (default: .cache/promtool).
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
  command -v promtool
  exit 0
fi

root=$(cd "$(dirname "$0")/../../.." && pwd)
cache=${1:-$root/.cache/promtool}
bin=$cache/root/usr/bin/promtool
if [ ! -x "$bin" ]; then
  mkdir -p "$cache"
  # apt-get download needs package lists; a fresh machine (as root) may have none yet.
  if ! (cd "$cache" && apt-get download -qq prometheus >/dev/null 2>&1); then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq >/dev/null
      (cd "$cache" && apt-get download -qq prometheus >/dev/null)
    else
      echo "get_promtool: apt-get download prometheus failed (run apt-get update as root)" >&2
      exit 1
    fi
  fi
  rm -rf "$cache/root"
  dpkg-deb -x "$cache"/prometheus_*.deb "$cache/root"
  rm -f "$cache"/prometheus_*.deb
fi
"$bin" --version >/dev/null
echo "$bin"

#!/usr/bin/env bash
# Builds banger's two C programs, static x86_64 binaries with no runtime dependencies:
#   dist/guest/banger-vsock-agent  the guest agent (runs in any distro's root filesystem)
#   dist/host/banger-fsjail        runs virtiofsd for a read-write --mount as the folder's owner
#                                  in a user namespace, under a seccomp filter (src/vms/drivers/qemu/mounts.ts)
# Each is rebuilt only when a source is newer than the binary. Needs gcc and libc6-dev
# (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# build OUT SRC... : compile SRC into OUT unless OUT is newer than every SRC, its headers and this script.
build() {
  local out=$1
  shift
  local fresh=1 f
  for f in "$@" "$(dirname "$1")"/*.h "$0"; do
    [ -e "$f" ] || continue
    [ -x "$out" ] && [ "$out" -nt "$f" ] || fresh=0
  done
  [ "$fresh" = 1 ] && return 0
  if ! command -v gcc >/dev/null 2>&1; then
    echo "build-agent: gcc not found; install gcc and libc6-dev (scripts/install-deps.sh)" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$out")"
  local tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  gcc -static -O2 -Wall -Wextra -s -o "$tmp" "$@"
  mv -f "$tmp" "$out"
  trap - EXIT
  echo "build-agent: built $out ($(stat -c %s "$out") bytes)" >&2
}

build dist/guest/banger-vsock-agent src/guest/agent/*.c
build dist/host/banger-fsjail src/host/fsjail/*.c

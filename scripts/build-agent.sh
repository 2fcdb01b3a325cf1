#!/usr/bin/env bash
# Builds the guest agent: a static x86_64 binary with no runtime dependencies, so it runs in
# any distro's root filesystem. Output: dist/guest/banger-vsock-agent. Rebuilds only when the
# source is newer than the binary. Needs gcc and libc6-dev (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

srcdir=src/guest/agent
srcs=("$srcdir"/*.c)
out=dist/guest/banger-vsock-agent

fresh=1
for f in "${srcs[@]}" "$srcdir"/*.h "$0"; do [ -x "$out" ] && [ "$out" -nt "$f" ] || fresh=0; done
if [ "$fresh" = 1 ]; then
  exit 0
fi
if ! command -v gcc >/dev/null 2>&1; then
  echo "build-agent: gcc not found; install gcc and libc6-dev (scripts/install-deps.sh)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
gcc -static -O2 -Wall -Wextra -s -o "$tmp" "${srcs[@]}"
mv -f "$tmp" "$out"
echo "build-agent: built $out ($(stat -c %s "$out") bytes)" >&2

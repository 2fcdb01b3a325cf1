#!/usr/bin/env bash
# banger's main job: the reference session of DESIGN.md, end to end, on this machine (as root).
#
#   bash scripts/demo.sh            run it; leaves the VM "testbox" running for you
#   bash scripts/demo.sh --cleanup  remove testbox at the end
#
# Installs what it needs (scripts/install-deps.sh), starts bangerd if it is not running, pulls
# the default kernel from Debian's signed archive, pulls debian:bookworm, boots it with NAT and
# runs a command over SSH. When docker.io cannot be reached (our build machines only reach
# Debian's archive and npm), the image comes from a local registry on 127.0.0.1 holding a Debian
# bookworm rootfs made with debootstrap: same name, same commands, and it says so.
set -euo pipefail
cd "$(dirname "$0")/.."
CLEANUP=0
[ "${1:-}" = "--cleanup" ] && CLEANUP=1
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (banger's daemon does privileged work: taps, NAT, VMs)" >&2; exit 1; fi

bash scripts/install-deps.sh
export PATH="$PWD/bin:$PATH"
KERNEL=${BANGER_DEMO_KERNEL:-debian-cloud-amd64}
IMAGE_REF=docker.io/library/debian:bookworm
REG_PID=
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  if [ "$CLEANUP" = 1 ]; then banger vm rm -f testbox >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

banger daemon start
# A previous run's VM would hold the image: start from a clean slate.
if banger vm show testbox >/dev/null 2>&1; then run banger vm rm -f testbox; fi
run banger doctor || true
run banger kernel list --available
if banger kernel show "$KERNEL" >/dev/null 2>&1; then
  echo "(kernel $KERNEL already pulled)"
else
  run banger kernel pull "$KERNEL"
fi

code=$(curl -sS -m 8 -o /dev/null -w '%{http_code}' https://registry-1.docker.io/v2/ 2>/dev/null || true)
if [ "$code" = 401 ] || [ "$code" = 200 ]; then
  run banger image pull "$IMAGE_REF" --kernel-ref "$KERNEL"
else
  echo
  echo "docker.io is not reachable from this machine (HTTP status '${code:-none}')."
  echo "Serving a debootstrap-made Debian bookworm image from a local registry on 127.0.0.1 instead."
  refs=$(mktemp)
  node scripts/demo-registry.mjs >"$refs" &
  REG_PID=$!
  for _ in $(seq 1 600); do [ -s "$refs" ] && break; kill -0 "$REG_PID" 2>/dev/null || { echo "local registry failed" >&2; exit 1; }; sleep 1; done
  LOCAL_REF=$(head -n1 "$refs"); rm -f "$refs"
  banger image rm --force debian-bookworm >/dev/null 2>&1 || true
  run banger image pull "$LOCAL_REF" --name debian-bookworm --kernel-ref "$KERNEL"
fi

run banger vm create --image debian-bookworm --name testbox --nat
run banger vm ssh testbox -- "id; uname -r; systemctl is-active banger-vsock-agent"
run banger ps
if [ "$CLEANUP" = 1 ]; then echo; echo "removing testbox (--cleanup)"; else echo; echo "testbox is running: 'banger vm ssh testbox', and 'banger vm rm -f testbox' when done."; fi

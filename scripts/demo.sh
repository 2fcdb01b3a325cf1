#!/usr/bin/env bash
# banger's main job: the reference session of DESIGN.md, end to end, on this machine (as root).
#
#   bash scripts/demo.sh            run it; leaves the VMs "testbox" and "testbox2" running for you
#   bash scripts/demo.sh --cleanup  at the end, undo what the demo created: the VMs, and (only
#                                   when they did not exist before) the daemon it started, the
#                                   state under /var/lib/banger and /run/banger, bridge banger0,
#                                   nft table 'ip banger', and ip_forward's old value
#
# Installs what it needs (scripts/install-deps.sh), starts bangerd if it is not running, pulls
# the default kernel from Debian's signed archive, pulls debian:bookworm (no systemd, no sshd),
# boots it with NAT (the first create prepares the image once: a builder VM installs systemd and
# openssh-server with apt, and the VM starts from the result), runs a command over SSH, then
# creates a second VM of the same image, which starts straight from the prepared disk (no
# install, no mirror) and shows the gain. When docker.io cannot be reached (our build machines only reach Debian's
# archive and npm), it serves the same shape itself and says so: a bare Debian bookworm rootfs
# (debootstrap minbase, nothing added) from a local registry on 127.0.0.1, and a local package
# mirror subset (Debian's signed InRelease + Packages.xz and the .debs the install needs) on
# banger's bridge address, used by the prepare through --package-mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
CLEANUP=0
[ "${1:-}" = "--cleanup" ] && CLEANUP=1
if [ "$(id -u)" != 0 ]; then echo "demo.sh: run as root (banger's daemon does privileged work: taps, NAT, VMs)" >&2; exit 1; fi

bash scripts/install-deps.sh
. scripts/node-env.sh
export PATH="$PWD/bin:$PATH"
KERNEL=${BANGER_DEMO_KERNEL:-debian-cloud-amd64}
IMAGE_REF=docker.io/library/debian:bookworm
REG_PID=
MIRROR_PID=
CREATE_ARGS=()
# What existed before the demo: --cleanup removes only what the demo itself created.
had_state=0; [ -e /var/lib/banger ] && had_state=1
had_run=0; [ -e /run/banger ] && had_run=1
had_bridge=0; ip link show banger0 >/dev/null 2>&1 && had_bridge=1
had_nft=0; nft list table ip banger >/dev/null 2>&1 && had_nft=1
had_daemon=0; banger daemon status >/dev/null 2>&1 && had_daemon=1
old_forward=$(cat /proc/sys/net/ipv4/ip_forward)
cleanup() {
  for p in $REG_PID $MIRROR_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  [ "$CLEANUP" = 1 ] || return 0
  banger vm rm -f testbox testbox2 >/dev/null 2>&1 || true
  if [ "$had_daemon" = 0 ]; then banger daemon stop >/dev/null 2>&1 || true; fi
  if [ "$had_bridge" = 0 ]; then ip link del banger0 2>/dev/null || true; fi
  if [ "$had_nft" = 0 ]; then nft delete table ip banger 2>/dev/null || true; fi
  if [ "$had_state" = 0 ]; then rm -rf /var/lib/banger; fi
  if [ "$had_run" = 0 ]; then rm -rf /run/banger; fi
  echo "$old_forward" >/proc/sys/net/ipv4/ip_forward 2>/dev/null || true
  echo "(--cleanup: removed what this demo created)"
}
trap cleanup EXIT

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

banger daemon start
# A previous run's VMs would hold the image: start from a clean slate.
for vm in testbox testbox2; do if banger vm show "$vm" >/dev/null 2>&1; then run banger vm rm -f "$vm"; fi; done
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
  echo "Serving the same shape locally instead:"
  refs=$(mktemp)
  node scripts/demo-registry.mjs --bare >"$refs" &
  REG_PID=$!
  mirror=$(mktemp)
  node scripts/demo-mirror.mjs >"$mirror" &
  MIRROR_PID=$!
  for _ in $(seq 1 900); do [ -s "$refs" ] && [ -s "$mirror" ] && break; kill -0 "$REG_PID" 2>/dev/null || { echo "local registry failed" >&2; exit 1; }; kill -0 "$MIRROR_PID" 2>/dev/null || { echo "local package mirror failed" >&2; exit 1; }; sleep 1; done
  LOCAL_REF=$(head -n1 "$refs"); rm -f "$refs"
  read -r MIRROR_URL MIRROR_DEBS <"$mirror"; rm -f "$mirror"
  echo "  image:          $LOCAL_REF  (debootstrap --variant=minbase bookworm: no systemd, no sshd, no iproute2, like docker.io's)"
  echo "  package mirror: $MIRROR_URL  (Debian's signed InRelease + Packages.xz and $MIRROR_DEBS verified .debs; the guest's apt checks the signatures)"
  banger image rm --force debian-bookworm >/dev/null 2>&1 || true
  run banger image pull "$LOCAL_REF" --name debian-bookworm --kernel-ref "$KERNEL"
  CREATE_ARGS=(--package-mirror "$MIRROR_URL")
fi

echo
echo "debian:bookworm has no systemd and no SSH server: the first vm create prepares the image once (stage 'prepare': a builder VM installs them with apt${CREATE_ARGS[*]:+ from the local package mirror}; under QEMU TCG this takes minutes), then boots from the prepared disk."
t0=$(date +%s)
run banger vm create --image debian-bookworm --name testbox --nat "${CREATE_ARGS[@]}"
first=$(( $(date +%s) - t0 ))
echo "(vm create took $first s, the image's prepare included)"
say "banger vm logs testbox | grep banger-first-boot"
banger vm logs testbox | tr '\r' '\n' | grep -E '^banger-first-boot: (step|package)' || true
run banger vm ssh testbox -- "id; uname -r; systemctl is-active banger-vsock-agent"
# the same guest without SSH: through its guest agent (vm exec, vm cp)
run banger vm exec testbox -- uname -n -r
note=$(mktemp)
printf 'a file from the host\n' > "$note"
run banger vm cp "$note" testbox:/root/note.txt
rm -f "$note"
run banger vm exec testbox -- cat /root/note.txt
echo
echo "A second VM of the same image starts from the prepared disk: no install, no package mirror."
t1=$(date +%s)
run banger vm create --image debian-bookworm --name testbox2 --nat
echo "(vm create took $(( $(date +%s) - t1 )) s; the first took $first s)"
run banger vm ssh testbox2 -- "systemctl is-active ssh banger-vsock-agent; cat /etc/machine-id"
say "banger image show debian-bookworm | grep -A1 prepared"
banger image show debian-bookworm | grep -A1 '^prepared' || true
run banger ps
if [ "$CLEANUP" = 1 ]; then echo; echo "removing testbox and testbox2 (--cleanup)"; else echo; echo "testbox and testbox2 are running: 'banger vm ssh testbox', and 'banger vm rm -f testbox testbox2' when done."; fi

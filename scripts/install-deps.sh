#!/usr/bin/env bash
# Installs what banger and its tests need on a Debian 12 machine: Debian packages (when
# missing and we are root), npm packages (npm ci, which also brings the pinned Node.js 24 LTS
# from the npm registry) and the build, run on the Node.js scripts/node-env.sh picks (the
# host's when it is >= 22.19, else the pinned one). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  qemu-system-x86 qemu-utils        # the qemu microvm driver, qcow2 overlays
  e2fsprogs                         # mkfs.ext4 -d, debugfs, e2fsck
  iproute2 nftables iptables        # bridge, taps, NAT
  openssh-client                    # vm ssh, ssh-keygen
  zstd xz-utils binutils cpio kmod  # kernel bundles, .deb unpacking, initramfs
  gpgv debian-archive-keyring       # verifying Debian's InRelease
  busybox-static                    # initramfs tests
  docker-registry skopeo apache2-utils  # a real OCI registry in tests, skopeo baseline, htpasswd
  debootstrap                       # the Debian rootfs used by the end-to-end tests
  attr                              # setfattr: restores xattrs (security.capability) when applying image layers
  socat curl ca-certificates
  file                              # tests: the guest agent is checked to be statically linked
  gcc libc6-dev                     # the static guest agent (C)
  dpkg-dev                          # dpkg-scanpackages: local apt repo for the first-boot install test
  python3 make                      # python3: a pty for the CLI in kernel e2e tests; make: the slow tier's kernel build
  lz4                               # Debian kernels are LZ4 bzImages (vmlinux extraction)
  gpg gpg-agent                     # tests: sign a throw-away Debian-style archive (Packages.xz/.gz, Valid-Until)
  flex bison bc libelf-dev libssl-dev  # slow tier: scripts/make-generic-kernel.sh builds a kernel (BANGER_SLOW=1)
  openssl                           # kernel tests: a self-signed HTTPS server (TLS must be verified); python3 above also gives the CLI a pty in kernel e2e tests
)
missing=()
for p in "${PKGS[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# apt's lists: missing (a cleaned image) or older than a day means `apt-get update` (as root).
# Whatever format apt keeps them in, nothing in the tests reads them: the test mirror is fetched
# from Debian's archive itself (test/helpers/debian-archive-cache.ts).
STAMP=/var/cache/banger-test/apt-update.stamp  # apt keeps the server's Last-Modified as a list's mtime: stamp our own
lists_fresh() {
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || return 1
  [ -n "$(find "$STAMP" -mmin -1440 2>/dev/null)" ]
}
if [ "$(id -u)" = 0 ] && ! lists_fresh; then
  echo "apt lists missing or not updated for a day: apt-get update" >&2
  if timeout 600 apt-get update -q >&2; then
    mkdir -p "$(dirname "$STAMP")" && touch "$STAMP"
  else
    echo "warning: apt-get update failed (continuing with what is installed)" >&2
  fi
fi
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  else
    echo "missing Debian packages (run as root to install): ${missing[*]}" >&2
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # The host's npm may run on a Node.js older than banger's engines (Debian 12 has 20): it warns
  # EBADENGINE for packages that need the Node.js 24 this very command installs. Those warnings
  # say nothing a user can act on, so they are dropped; every other line and the exit code stay.
  rc=0
  npm ci --no-audit --no-fund 2> >(grep -v 'EBADENGINE' >&2) >&2 || rc=$?
  wait
  [ "$rc" = 0 ] || { echo "npm ci failed (exit $rc)" >&2; exit "$rc"; }
fi
. scripts/node-env.sh
npm run build >&2

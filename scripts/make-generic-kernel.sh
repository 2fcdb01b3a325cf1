#!/usr/bin/env bash
# make-generic-kernel.sh: build banger's generic guest kernel (everything built in: virtio-mmio
# with command-line devices, virtio blk/net/console/rng, vsock, ext4, 8250 console, IP_PNP, PVH,
# devtmpfs, cgroups, namespaces, BASE_FULL; no modules, no initramfs) and pack it as a kernel
# bundle `<name>-x86_64.tar.zst` (vmlinux at top level, the layout `banger kernel pull` reads).
# Prints the catalog entry (JSON, kind "bundle") to publish on stdout; logs go to stderr.
#
# Sources, in order (override with --source):
#   kernelorg  https://cdn.kernel.org/pub/linux/kernel/v6.x/linux-<version>.tar.xz, checked
#              against the sha256sums.asc published beside it (needs --version)
#   debian     Debian's linux-source-<series> package via `apt-get download` (apt verifies it
#              through the signed archive), unpacked with dpkg-deb without installing
#
# Usage: scripts/make-generic-kernel.sh [options]
#   --name NAME        bundle/catalog name            (default: generic-<kernel version>)
#   --out DIR          output directory               (default: ./out/generic-kernel)
#   --source S         auto | kernelorg | debian      (default: auto: kernelorg if --version and reachable, else debian)
#   --version V        kernel.org version, e.g. 6.1.155
#   --series S         Debian linux-source series     (default: 6.1)
#   --jobs N           make -j                        (default: nproc)
#   --url-base URL     where the bundle will be published; the printed tarballUrl is URL/<file>
#   --config FILE      config fragment                (default: scripts/generic-kernel.config)
#   --src DIR          use an unpacked kernel source tree instead of fetching one (it is
#                      configured and built in place)
#   --keep             keep the build tree (in OUT/build)
# Build dependencies: gcc make flex bison bc libelf-dev libssl-dev xz-utils zstd tar (+ curl or apt-get).
# Measured: 2 cores, Debian linux-source-6.1: see docs/kernel-catalog.md.
set -euo pipefail
export LC_ALL=C

here="$(cd "$(dirname "$0")" && pwd)"
name="" src_dir="" out="$PWD/out/generic-kernel" source=auto version="" series=6.1 jobs="$(nproc)" url_base="" keep=0
fragment="$here/generic-kernel.config"
while (($#)); do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --source) source="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --series) series="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --url-base) url_base="$2"; shift 2 ;;
    --config) fragment="$2"; shift 2 ;;
    --src) src_dir="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "make-generic-kernel: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$source" in auto|kernelorg|debian) ;; *) echo "make-generic-kernel: --source must be auto, kernelorg or debian (got '$source')" >&2; exit 2 ;; esac
[[ "$jobs" =~ ^[0-9]+$ ]] || { echo "make-generic-kernel: --jobs must be a number (got '$jobs')" >&2; exit 2; }
[ -f "$fragment" ] || { echo "make-generic-kernel: config fragment $fragment not found" >&2; exit 2; }
for t in gcc make flex bison bc tar xz zstd sha256sum; do
  command -v "$t" >/dev/null || { echo "make-generic-kernel: missing build tool '$t' (apt-get install gcc make flex bison bc libelf-dev libssl-dev xz-utils zstd)" >&2; exit 1; }
done

log() { echo "make-generic-kernel: $*" >&2; }
step() { log "step $1"; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$out/build"
rm -rf "$work"
mkdir -p "$work"
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
start=$(date +%s)

fetch_kernelorg() {
  [ -n "$version" ] || return 1
  command -v curl >/dev/null || return 1
  local major="${version%%.*}" base tarball
  base="https://cdn.kernel.org/pub/linux/kernel/v${major}.x"
  tarball="linux-${version}.tar.xz"
  log "trying kernel.org: $base/$tarball"
  curl -fsS --connect-timeout 10 -o "$work/sha256sums.asc" "$base/sha256sums.asc" || return 1
  curl -fsS --connect-timeout 10 -o "$work/$tarball" "$base/$tarball" || return 1
  local want got
  want="$(awk -v f="$tarball" '$2 == f {print $1}' "$work/sha256sums.asc")"
  got="$(sha256sum "$work/$tarball" | cut -d' ' -f1)"
  if [ -z "$want" ] || [ "$want" != "$got" ]; then
    log "kernel.org tarball sha256 $got does not match sha256sums.asc ('$want')"
    exit 1
  fi
  tar -C "$work" -xf "$work/$tarball"
  src="$work/linux-${version}"
  src_desc="kernel.org linux-${version} (sha256 $got)"
}

fetch_debian() {
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || { log "no apt-get/dpkg-deb for Debian's linux-source-$series"; exit 1; }
  log "fetching Debian's linux-source-$series (apt verifies it against the signed archive)"
  (cd "$work" && apt-get download "linux-source-$series" >&2)
  local deb
  deb="$(ls "$work"/linux-source-"$series"_*.deb | head -n1)"
  dpkg-deb -x "$deb" "$work/pkg"
  local tarball
  tarball="$(ls "$work"/pkg/usr/src/linux-source-"$series".tar.* | head -n1)"
  tar -C "$work" -xf "$tarball"
  src="$work/linux-source-$series"
  src_desc="Debian $(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)"
  rm -rf "$work/pkg" "$deb"
}

step sources
src="" src_desc=""
if [ -n "$src_dir" ]; then
  [ -f "$src_dir/Makefile" ] || { log "--src $src_dir is not a kernel source tree"; exit 2; }
  src="$(cd "$src_dir" && pwd)"
  src_desc="local tree $(make -C "$src" -s kernelversion 2>/dev/null)"
else
case "$source" in
  kernelorg) fetch_kernelorg || { log "kernel.org source not available (need --version and network)"; exit 1; } ;;
  debian) fetch_debian ;;
  auto) fetch_kernelorg || fetch_debian ;;
esac
fi
[ -d "$src" ] || { log "source tree $src missing"; exit 1; }
log "source: $src_desc"

step config
make -C "$src" -s tinyconfig >&2
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$fragment") >&2
make -C "$src" -s olddefconfig >&2
missing=()
while IFS= read -r line; do
  sym="${line%%=*}"
  grep -qx "$sym=y" "$src/.config" || missing+=("$sym")
done < <(grep -E '^CONFIG_[A-Z0-9_]+=y$' "$fragment")
if ((${#missing[@]})); then
  log "these options from $fragment did not survive olddefconfig (unmet dependencies?): ${missing[*]}"
  exit 1
fi
grep -q '^CONFIG_MODULES=y' "$src/.config" && { log "CONFIG_MODULES ended up enabled; the generic kernel must have none"; exit 1; }

step build
make -C "$src" -s -j"$jobs" vmlinux >&2
kver="$(make -C "$src" -s kernelrelease)"
grep -q 'Xen' <(readelf -n "$src/vmlinux" 2>/dev/null) || { log "vmlinux has no PVH (Xen) ELF note; QEMU could not boot it"; exit 1; }

step pack
[ -n "$name" ] || name="generic-${kver}"
[[ "$name" =~ ^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$ ]] || { log "invalid --name '$name'"; exit 2; }
stage="$work/stage"
mkdir -p "$stage"
cp "$src/vmlinux" "$stage/vmlinux"
cp "$src/.config" "$stage/config"
file="$name-x86_64.tar.zst"
tmpfile="$out/.$file.tmp"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - vmlinux config | zstd -q -19 -T0 -o "$tmpfile" -f
mv -f "$tmpfile" "$out/$file"
sha="$(sha256sum "$out/$file" | cut -d' ' -f1)"
size="$(stat -c %s "$out/$file")"
url="${url_base:+${url_base%/}/}$file"
elapsed=$(( $(date +%s) - start ))
log "built $out/$file ($size bytes, vmlinux $(stat -c %s "$src/vmlinux") bytes) in ${elapsed}s"

cat <<EOF
{
  "name": "$name",
  "kind": "bundle",
  "distro": "generic",
  "arch": "x86_64",
  "kernelVersion": "$kver",
  "tarballUrl": "$url",
  "tarballSha256": "$sha",
  "sizeBytes": $size,
  "description": "Generic Linux $kver, everything built in (virtio-mmio, vsock, ext4, IP_PNP, PVH), from $src_desc"
}
EOF

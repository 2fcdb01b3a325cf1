#!/bin/sh
# banger-first-boot: PID 1 of every banger VM (kernel command line
# init=/usr/local/libexec/banger-first-boot). POSIX sh; runs on every boot.
#
# Steps (each logged to the console as "banger-first-boot: <step>"):
#   1. mount-basics   mount /proc /sys /dev (devtmpfs) /run (tmpfs) when not mounted
#   2. modules        mount the kernel's modules disk (banger.modules=/dev/vdX on the command
#                     line) read-only on /lib/modules/RELEASE, so modprobe works in the guest
#   3. seed           mount the seed disk (/dev/vdb, ext4, label BANGERSEED) read-only, apply
#                     it (host key, root's authorized_keys, hostname, resolv.conf, /etc/hosts,
#                     network.env), unmount it
#   4. grow-root      only when the seed asks (vm create --disk-size) and the disk size changed
#                     since the last grow: grow the ext4 root filesystem online with resize2fs
#   4b. mounts        host folders (vm create --mount) from /etc/banger/mounts (copied from the
#                     seed's `mounts`: "TAG GUESTDIR ro|rw 9p|virtiofs" lines): modprobe the
#                     filesystem from the modules disk, mkdir GUESTDIR, mount; a failure is a
#                     warning (the host checks the mounts after boot and reports it)
#   5. install        only when systemd or an SSH server unit is missing: install systemd + an
#                     SSH server with the guest's own package manager (os-release ID, then ID_LIKE);
#                     from the seed's package-mirror (vm create --package-mirror) and through its
#                     package-proxy when given, for this install only (see pkg_source_setup)
#   6. configure      sshd drop-in Include, machine-id, enable ssh + banger-vsock-agent
#   7. exec-init      write the marker and exec systemd (Alpine: busybox init + OpenRC)
# Prepare mode (the seed carries `prepare`: banger's builder VM of `banger image prepare`, or the
# first `vm create` of an image that needs the install): steps 1-6 run once, then
#   packages          the packages the install added go to /var/lib/banger/prepared-packages
#                     and to the console ("banger-first-boot: added NAME VERSION"), where banger
#                     reads them for `banger image show`
#   scrub             remove what must differ per VM: machine-id emptied (the file is kept),
#                     SSH host keys, root's authorized_keys, random seed, package lists and
#                     caches, logs, /tmp; resolv.conf, hostname and hosts as the image had them
#   prepare-done      "banger-first-boot: prepare done" on the console, remount / read-only,
#                     sync, reboot (reboot=t and QEMU's -no-reboot end the VM): banger keeps the
#                     disk as the image's prepared disk; every VM after it boots straight into systemd
# On failure it prints "banger-first-boot: error: ..." and a hint, then drops to a shell on
# the console (or sleeps) instead of exiting: PID 1 exiting would panic the kernel.
#
# Every process costs tens of milliseconds in a guest under TCG, so the common path uses shell
# builtins (read, printf, umask, test) and runs only mount, umount and mv.
#
# The network is already up (ip= on the kernel command line is applied by the kernel or
# banger's initramfs). Test mode (BANGER_FIRST_BOOT_TEST=1): the seed comes from the directory
# $BANGER_SEED_DIR instead of /dev/vdb, the final exec is printed instead of run, and a
# failure exits 1.

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022

TEST="${BANGER_FIRST_BOOT_TEST:-0}"
SEED_DEV="${BANGER_SEED_DEVICE:-/dev/vdb}"
SEED_MNT=/run/banger-seed
MARKER=/var/lib/banger/first-boot.done
ROOT_SIZE_FILE=/var/lib/banger/root-size
AGENT_UNIT=banger-vsock-agent.service
APT_CONF=/etc/apt/apt.conf.d/00banger-first-boot
PKG_DIR=/var/lib/banger/first-boot-pkg
PKG_MIRROR=
PKG_PROXY=
PM_OPTS=
PREPARE=0
PREPARED_PACKAGES=/var/lib/banger/prepared-packages
ORIG_DIR=/run/banger-orig
STEP=start

log() { echo "banger-first-boot: $*"; }

# fail MESSAGE [HINT]: never returns.
fail() {
  [ "${POLICY_RC_CREATED:-0}" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "${APT_CONF_CREATED:-0}" = 1 ] && rm -f "$APT_CONF"
  [ "${PKG_DIR_CREATED:-0}" = 1 ] && rm -rf "$PKG_DIR"
  echo "banger-first-boot: error: step '$STEP' failed: $1" >&2
  [ -n "${2:-}" ] && echo "banger-first-boot: hint: $2" >&2
  if [ "$TEST" = 1 ]; then exit 1; fi
  echo "banger-first-boot: the VM cannot finish booting; dropping to a shell on the console" >&2
  if [ -c /dev/console ]; then
    /bin/sh </dev/console >/dev/console 2>&1
  fi
  while :; do sleep 3600; done
}

step() {
  STEP="$1"
  _up=
  read -r _up _rest </proc/uptime 2>/dev/null || true
  log "step $1${2:+: $2}${_up:+ (at ${_up} s)}"
}

is_mounted() {
  [ -r /proc/mounts ] || return 1
  while read -r _dev _mp _rest; do
    [ "$_mp" = "$1" ] && return 0
  done </proc/mounts
  return 1
}

mount_basics() {
  step mount-basics
  [ -d /proc ] || mkdir -p /proc
  is_mounted /proc || mount -t proc proc /proc || fail "cannot mount /proc"
  for _d in /sys /dev /run; do [ -d "$_d" ] || mkdir -p "$_d"; done
  is_mounted /sys || mount -t sysfs sysfs /sys || fail "cannot mount /sys"
  is_mounted /dev || mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || fail "cannot mount /dev (devtmpfs)"
  [ -d /dev/pts ] || mkdir -p /dev/pts
  is_mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts 2>/dev/null || true
  is_mounted /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "cannot mount /run (tmpfs)"
}

# cmdline_value KEY: sets _val to the value of the last KEY=VALUE on the kernel command line
# (empty when absent). Builtins only.
cmdline_value() {
  _val=""
  _cmdline=""
  read -r _cmdline </proc/cmdline 2>/dev/null || true
  for _arg in $_cmdline; do
    case "$_arg" in "$1"=*) _val="${_arg#"$1"=}" ;; esac
  done
}

# The kernel's modules, from the read-only disk banger attaches to every VM of a Debian kernel.
# A failure is a warning: the VM boots without them (the initramfs loaded what booting needs).
mount_modules() {
  cmdline_value banger.modules
  case "$_val" in /dev/*) _dev="$_val" ;; *) return 0 ;; esac
  _rel=
  read -r _rel </proc/sys/kernel/osrelease 2>/dev/null || true
  [ -n "$_rel" ] || return 0
  step modules "$_dev on /lib/modules/$_rel"
  if [ "$TEST" = 1 ]; then
    log "test mode: would mount $_dev"
    return 0
  fi
  [ -d "/lib/modules/$_rel" ] || mkdir -p "/lib/modules/$_rel" 2>/dev/null
  _i=0
  while [ ! -b "$_dev" ] && [ "$_i" -lt 25 ]; do
    sleep 0.2 2>/dev/null || sleep 1
    _i=$((_i + 1))
  done
  mount -t ext4 -o ro "$_dev" "/lib/modules/$_rel" 2>/dev/null || log "warning: cannot mount the modules disk $_dev: modprobe will not find modules"
}

# Host folders shared by the VMM (virtiofs or virtio-9p), mounted on every boot.
mount_shares() {
  [ -f /etc/banger/mounts ] || return 0
  step mounts "host folders from /etc/banger/mounts"
  _loaded=
  while read -r _tag _dir _mode _fs _rest || [ -n "$_tag" ]; do
    case "$_tag" in banger[0-9]*) ;; *) log "warning: ignoring mount line for tag '$_tag'"; continue ;; esac
    case "$_dir" in /*) ;; *) log "warning: ignoring mount $_tag on '$_dir': not an absolute path"; continue ;; esac
    case "$_fs" in virtiofs) _type=virtiofs _opts= ;; *) _type=9p _opts=trans=virtio,version=9p2000.L,msize=262144 ;; esac
    if [ "$_mode" = ro ]; then _opts="${_opts:+$_opts,}ro"; fi
    if [ "$TEST" = 1 ]; then
      log "test mode: would mount $_type $_tag on $_dir (${_opts:-rw})"
      continue
    fi
    case " $_loaded " in
      *" $_type "*) ;;
      *)
        if [ "$_type" = 9p ]; then modprobe -q 9pnet_virtio 2>/dev/null; modprobe -q 9p 2>/dev/null; else modprobe -q virtiofs 2>/dev/null; fi
        _loaded="$_loaded $_type"
        ;;
    esac
    [ -d "$_dir" ] || mkdir -p "$_dir" || { log "warning: cannot create $_dir for host folder $_tag"; continue; }
    if mount -t "$_type" ${_opts:+-o "$_opts"} "$_tag" "$_dir"; then
      log "mounted host folder $_tag on $_dir ($_type${_mode:+, $_mode})"
    else
      log "warning: cannot mount host folder $_tag on $_dir: does the kernel have $_type (built in or on the modules disk)?"
    fi
  done </etc/banger/mounts
}

# Grows the root filesystem when the seed carries `grow-root` (the host made the disk larger
# than the image). The disk's size in 512-byte sectors is recorded after each grow, so a later
# boot of the same disk skips it. A failed grow is reported and the boot goes on.
grow_root() {
  [ "${GROW_ROOT:-0}" = 1 ] || return 0
  if [ "$TEST" = 1 ]; then
    return 0 # never resize a device of the machine running the tests
  fi
  cmdline_value root
  case "$_val" in /dev/*) _root="$_val" ;; *) return 0 ;; esac
  _sizefile="/sys/class/block/${_root#/dev/}/size"
  [ -r "$_sizefile" ] || return 0
  read -r _sectors <"$_sizefile"
  _done=
  [ -f "$ROOT_SIZE_FILE" ] && read -r _done <"$ROOT_SIZE_FILE"
  [ "$_sectors" = "$_done" ] && return 0
  step grow-root "$_root is $((_sectors / 2048)) MiB"
  if ! command -v resize2fs >/dev/null 2>&1; then
    log "warning: resize2fs not found (install e2fsprogs): the root filesystem keeps its size"
    return 0
  fi
  if _out=$(resize2fs "$_root" 2>&1); then
    log "grew $_root online to $((_sectors / 2048)) MiB"
    [ -d "${ROOT_SIZE_FILE%/*}" ] || mkdir -p "${ROOT_SIZE_FILE%/*}"
    echo "$_sectors" >"$ROOT_SIZE_FILE"
  else
    log "warning: resize2fs $_root failed: $_out"
  fi
}

# Reads KEY=VALUE lines (values optionally quoted) without executing the file.
read_env_file() {
  while IFS= read -r _line || [ -n "$_line" ]; do
    case "$_line" in
      '#'* | '') continue ;;
    esac
    _k="${_line%%=*}"
    _v="${_line#*=}"
    case "$_k" in
      BANGER_IP | BANGER_PREFIX | BANGER_GATEWAY | BANGER_IFACE | BANGER_DNS | BANGER_VM_NAME) ;;
      *) continue ;;
    esac
    case "$_v" in
      \"*\") _v="${_v#\"}"; _v="${_v%\"}" ;;
      \'*\') _v="${_v#\'}"; _v="${_v%\'}" ;;
    esac
    eval "$_k=\$_v"
  done <"$1"
}

mount_seed() {
  if [ "$TEST" = 1 ]; then
    SEED="${BANGER_SEED_DIR:?BANGER_SEED_DIR must name the seed directory in test mode}"
    return 0
  fi
  _i=0
  while [ ! -b "$SEED_DEV" ] && [ "$_i" -lt 50 ]; do
    sleep 0.2 2>/dev/null || sleep 1
    _i=$((_i + 1))
  done
  [ -b "$SEED_DEV" ] || fail "seed disk $SEED_DEV did not appear" "banger attaches the seed disk as the second virtio disk; check the VMM command line in the VM's log"
  [ -d "$SEED_MNT" ] || mkdir -p "$SEED_MNT"
  mount -t ext4 -o ro "$SEED_DEV" "$SEED_MNT" || fail "cannot mount seed disk $SEED_DEV"
  SEED="$SEED_MNT"
}

unmount_seed() {
  [ "$TEST" = 1 ] && return 0
  umount "$SEED_MNT" 2>/dev/null || true
}

# install_file SRC DST MODE: copy a (small, text) file via a temp file beside DST, then rename
# (which replaces a symlink at DST). The mode comes from the umask, so the file is never
# readable by others even for a moment; PID 1 is root, so root owns it. Builtins only, but mv.
install_file() {
  case "$3" in
    0600) umask 077 ;;
    0644) umask 022 ;;
    *) umask 022; cp "$1" "$2.banger-tmp" && chmod "$3" "$2.banger-tmp" && mv -f "$2.banger-tmp" "$2" || fail "cannot write $2"; return 0 ;;
  esac
  [ -e "$2.banger-tmp" ] && rm -f "$2.banger-tmp"
  { while IFS= read -r _l || [ -n "$_l" ]; do printf '%s\n' "$_l"; done <"$1"; } >"$2.banger-tmp" || fail "cannot write $2"
  umask 022
  mv -f "$2.banger-tmp" "$2" || fail "cannot write $2"
}

apply_seed() {
  if [ "$TEST" = 1 ]; then step seed "from directory ${BANGER_SEED_DIR:-}"; else step seed "from $SEED_DEV"; fi
  mount_seed
  [ -f "$SEED/version" ] || fail "seed has no 'version' file: not a banger seed disk"
  [ -f "$SEED/network.env" ] && read_env_file "$SEED/network.env"
  [ -d /etc/banger ] || mkdir -p -m 0755 /etc/banger
  GROW_ROOT=0
  [ -f "$SEED/grow-root" ] && GROW_ROOT=1
  if [ -f "$SEED/prepare" ]; then
    PREPARE=1
    # What this boot changes that the image had: put back before the disk is kept (scrub).
    mkdir -p "$ORIG_DIR"
    for _f in resolv.conf hostname hosts; do
      if [ -e "/etc/$_f" ] || [ -L "/etc/$_f" ]; then cp -P "/etc/$_f" "$ORIG_DIR/$_f"; fi
    done
    log "prepare mode: install once, scrub, power off (the disk becomes the image's prepared disk)"
  fi
  [ -f "$SEED/network.env" ] && install_file "$SEED/network.env" /etc/banger/network.env 0644
  install_file "$SEED/version" /etc/banger/seed-version 0644

  if [ -f "$SEED/ssh/ssh_host_ed25519_key" ]; then
    [ -d /etc/ssh ] || mkdir -p -m 0755 /etc/ssh
    install_file "$SEED/ssh/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key 0600
    [ -f "$SEED/ssh/ssh_host_ed25519_key.pub" ] &&
      install_file "$SEED/ssh/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub 0644
    log "installed the SSH host key pinned by banger"
  else
    fail "seed has no ssh/ssh_host_ed25519_key" "banger generates the host key before first boot; recreate the VM"
  fi
  if [ -f "$SEED/ssh/authorized_keys" ]; then
    [ -d /root/.ssh ] || mkdir -p -m 0700 /root/.ssh
    install_file "$SEED/ssh/authorized_keys" /root/.ssh/authorized_keys 0600
    log "installed root's authorized_keys"
  fi

  HOSTNAME_SEED=
  if [ -f "$SEED/hostname" ]; then
    read -r HOSTNAME_SEED <"$SEED/hostname" || true
  fi
  [ -n "$HOSTNAME_SEED" ] || HOSTNAME_SEED="${BANGER_VM_NAME:-}"
  if [ -n "$HOSTNAME_SEED" ]; then
    echo "$HOSTNAME_SEED" >/etc/hostname.banger-tmp && mv -f /etc/hostname.banger-tmp /etc/hostname
    echo "$HOSTNAME_SEED" >/proc/sys/kernel/hostname 2>/dev/null || hostname "$HOSTNAME_SEED" 2>/dev/null || true
    log "hostname $HOSTNAME_SEED"
  fi
  if [ -f "$SEED/resolv.conf" ]; then
    install_file "$SEED/resolv.conf" /etc/resolv.conf 0644 # mv replaces a symlink (systemd-resolved's)
    log "resolv.conf from the seed"
  fi
  if [ -f "$SEED/mounts" ]; then
    install_file "$SEED/mounts" /etc/banger/mounts 0644
  elif [ -f /etc/banger/mounts ]; then
    rm -f /etc/banger/mounts
  fi
  [ -f "$SEED/package-mirror" ] && read -r PKG_MIRROR <"$SEED/package-mirror"
  [ -f "$SEED/package-proxy" ] && read -r PKG_PROXY <"$SEED/package-proxy"
  for _u in "$PKG_MIRROR" "$PKG_PROXY"; do
    case "$_u" in
      '' | http://* | https://*) ;;
      *) fail "the seed's package-mirror/package-proxy '$_u' is not an http(s) URL" "recreate the VM with a valid --package-mirror / --package-proxy" ;;
    esac
  done
  write_hosts
  unmount_seed
}

# /etc/hosts: keep the image's lines, make sure localhost resolves, and (re)write one line
# marked "# banger" for this VM's name.
write_hosts() {
  _tmp=/etc/hosts.banger-tmp
  : >"$_tmp"
  _have_localhost=0
  if [ -f /etc/hosts ]; then
    while IFS= read -r _line || [ -n "$_line" ]; do
      case "$_line" in
        *' # banger') continue ;;
      esac
      case " $_line " in
        *[[:space:]]localhost[[:space:]]*) _have_localhost=1 ;;
      esac
      echo "$_line" >>"$_tmp"
    done </etc/hosts
  fi
  if [ "$_have_localhost" = 0 ]; then
    echo "127.0.0.1 localhost" >>"$_tmp"
    echo "::1 localhost ip6-localhost ip6-loopback" >>"$_tmp"
  fi
  if [ -n "${HOSTNAME_SEED:-}" ]; then
    echo "${BANGER_IP:-127.0.1.1} $HOSTNAME_SEED # banger" >>"$_tmp"
  fi
  mv -f "$_tmp" /etc/hosts || fail "cannot write /etc/hosts"
}

find_systemd() {
  for _s in /lib/systemd/systemd /usr/lib/systemd/systemd; do
    if [ -x "$_s" ]; then
      SYSTEMD="$_s"
      return 0
    fi
  done
  return 1
}

os_field() {
  _f=/etc/os-release
  [ -f "$_f" ] || _f=/usr/lib/os-release
  [ -f "$_f" ] || return 0
  while IFS= read -r _line || [ -n "$_line" ]; do
    case "$_line" in
      "$1="*)
        _v="${_line#*=}"
        _v="${_v#\"}"; _v="${_v%\"}"; _v="${_v#\'}"; _v="${_v%\'}"
        echo "$_v"
        return 0
        ;;
    esac
  done <"$_f"
}

# Picks the package family from ID, then each word of ID_LIKE.
detect_family() {
  OS_ID="$(os_field ID)"
  OS_LIKE="$(os_field ID_LIKE)"
  for _id in $OS_ID $OS_LIKE; do
    case "$_id" in
      debian | ubuntu) FAMILY=debian; return 0 ;;
      alpine) FAMILY=alpine; return 0 ;;
      fedora | rhel | centos | rocky | almalinux | ol | amzn) FAMILY=fedora; return 0 ;;
      arch | archarm) FAMILY=arch; return 0 ;;
      opensuse* | suse | sles) FAMILY=suse; return 0 ;;
    esac
  done
  FAMILY=
  return 1
}

run() {
  command -v "$1" >/dev/null 2>&1 || fail "package manager '$1' not found in the image (os-release ID='$OS_ID')" \
    "use an image that already has systemd and openssh-server, or fix the image's /etc/os-release"
  log "running: $*"
  "$@"
}

# pkg_source_setup: for this install only, point the package manager at PKG_MIRROR and/or
# PKG_PROXY. The image's own sources files are never edited: the mirror is given through the
# package manager's options (PM_OPTS, word-split; the URLs contain no spaces) and files under
# $PKG_DIR, which pkg_source_cleanup removes, so the guest's sources are in effect afterwards.
#   debian/ubuntu  apt -o Dir::Etc::SourceList=$PKG_DIR/sources.list (one line:
#                  deb [signed-by=<ID's archive keyring>] MIRROR VERSION_CODENAME main)
#                  -o Dir::Etc::SourceParts=<empty dir>; proxy: -o Acquire::http(s)::Proxy
#   alpine         apk --repositories-file: MIRROR/vX.Y/main and /community (X.Y from /etc/alpine-release)
#   fedora         dnf --disablerepo='*' --repofrompath: Fedora MIRROR/releases/V/Everything/ARCH/os/
#                  and MIRROR/updates/V/Everything/ARCH/; RHEL-likes MIRROR/MAJOR/BaseOS|AppStream/ARCH/os/
#   arch           pacman --config: a copy of /etc/pacman.conf whose mirrorlist says
#                  Server = MIRROR/$repo/os/$arch
#   suse           zypper --reposd-dir: one repo MIRROR/distribution/leap/V/repo/oss/ (Tumbleweed:
#                  MIRROR/tumbleweed/repo/oss/)
# A proxy is also exported as http_proxy/https_proxy for the install (apk, dnf, pacman, zypper).
pkg_source_setup() {
  PM_OPTS=
  if [ -n "$PKG_PROXY" ]; then
    http_proxy="$PKG_PROXY" https_proxy="$PKG_PROXY" HTTP_PROXY="$PKG_PROXY" HTTPS_PROXY="$PKG_PROXY"
    export http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
    log "package proxy for this install: $PKG_PROXY"
    case "$FAMILY" in
      debian) PM_OPTS="-o Acquire::http::Proxy=$PKG_PROXY -o Acquire::https::Proxy=$PKG_PROXY" ;;
      fedora) PM_OPTS="--setopt=proxy=$PKG_PROXY" ;;
    esac
  fi
  [ -n "$PKG_MIRROR" ] || return 0
  rm -rf "$PKG_DIR"
  mkdir -p "$PKG_DIR" && PKG_DIR_CREATED=1
  log "package mirror for this install: $PKG_MIRROR (the image's own sources are left as they are and used afterwards)"
  case "$FAMILY" in
    debian)
      _code="$(os_field VERSION_CODENAME)"
      [ -n "$_code" ] || _code="$(os_field UBUNTU_CODENAME)"
      [ -n "$_code" ] || fail "--package-mirror: /etc/os-release has no VERSION_CODENAME, so the suite to use from $PKG_MIRROR is unknown" "use an image whose os-release names its release, or install without --package-mirror"
      _kr=
      for _k in "/usr/share/keyrings/$OS_ID-archive-keyring.gpg" /usr/share/keyrings/debian-archive-keyring.gpg /usr/share/keyrings/ubuntu-archive-keyring.gpg; do
        if [ -f "$_k" ]; then _kr="$_k"; break; fi
      done
      echo "deb ${_kr:+[signed-by=$_kr] }$PKG_MIRROR $_code main" >"$PKG_DIR/sources.list"
      mkdir -p "$PKG_DIR/sources.list.d"
      PM_OPTS="$PM_OPTS -o Dir::Etc::SourceList=$PKG_DIR/sources.list -o Dir::Etc::SourceParts=$PKG_DIR/sources.list.d"
      log "apt source for this install: $(cat "$PKG_DIR/sources.list")"
      ;;
    alpine)
      _rel=
      [ -f /etc/alpine-release ] && read -r _rel </etc/alpine-release
      [ -n "$_rel" ] || fail "--package-mirror: /etc/alpine-release is missing, so the branch to use from $PKG_MIRROR is unknown"
      _br="v${_rel%.*}"
      printf '%s/%s/main
%s/%s/community
' "$PKG_MIRROR" "$_br" "$PKG_MIRROR" "$_br" >"$PKG_DIR/repositories"
      PM_OPTS="--repositories-file $PKG_DIR/repositories"
      ;;
    fedora)
      _ver="$(os_field VERSION_ID)"
      _arch="$(uname -m)"
      if [ "$OS_ID" = fedora ]; then
        _r1="$PKG_MIRROR/releases/$_ver/Everything/$_arch/os/"
        _r2="$PKG_MIRROR/updates/$_ver/Everything/$_arch/"
      else
        _r1="$PKG_MIRROR/${_ver%%.*}/BaseOS/$_arch/os/"
        _r2="$PKG_MIRROR/${_ver%%.*}/AppStream/$_arch/os/"
      fi
      PM_OPTS="$PM_OPTS --disablerepo=* --repofrompath=banger-1,$_r1 --repofrompath=banger-2,$_r2 --enablerepo=banger-1 --enablerepo=banger-2"
      ;;
    arch)
      printf 'Server = %s/$repo/os/$arch
' "$PKG_MIRROR" >"$PKG_DIR/mirrorlist"
      sed "s#/etc/pacman.d/mirrorlist#$PKG_DIR/mirrorlist#g" /etc/pacman.conf >"$PKG_DIR/pacman.conf" || fail "cannot read /etc/pacman.conf"
      PM_OPTS="--config $PKG_DIR/pacman.conf"
      ;;
    suse)
      case "$OS_ID" in
        opensuse-tumbleweed) _p=tumbleweed/repo/oss/ ;;
        *) _p="distribution/leap/$(os_field VERSION_ID)/repo/oss/" ;;
      esac
      mkdir -p "$PKG_DIR/repos.d"
      printf '[banger-oss]\nname=banger package mirror\nbaseurl=%s/%s\nenabled=1\ngpgcheck=1\n' "$PKG_MIRROR" "$_p" >"$PKG_DIR/repos.d/banger-oss.repo"
      PM_OPTS="--reposd-dir $PKG_DIR/repos.d"
      ;;
  esac
}

# Undo pkg_source_setup: the image's own sources (never edited) are the only ones again, and
# indexes fetched from the mirror are dropped so the guest's next update fetches its own.
pkg_source_cleanup() {
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
  [ -n "$PKG_MIRROR" ] || return 0
  rm -rf "$PKG_DIR"
  PKG_DIR_CREATED=0
  if [ "$FAMILY" = debian ] && [ -d /var/lib/apt/lists ]; then
    find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -exec rm -f {} + 2>/dev/null || true
  fi
  log "package mirror used for the install only: the image's own package sources apply again"
}

install_debian() {
  # Keep maintainer scripts from starting daemons now (PID 1 is this script, not systemd).
  POLICY_RC_CREATED=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    mkdir -p /usr/sbin
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && POLICY_RC_CREATED=1
  fi
  # One-time install: dpkg without fsync (much faster on emulated disks; a crash here means
  # the next boot installs again) and no translation downloads.
  APT_CONF_CREATED=0
  if [ -d /etc/apt/apt.conf.d ] && [ ! -e "$APT_CONF" ]; then
    printf '// banger-first-boot: temporary, removed after the first-boot install\nDpkg::Options { "--force-unsafe-io"; };\nAcquire::Languages "none";\n' >"$APT_CONF" && APT_CONF_CREATED=1
  fi
  DEBIAN_FRONTEND=noninteractive
  export DEBIAN_FRONTEND
  _rc=0
  # shellcheck disable=SC2086 # PM_OPTS is a list of options (no spaces inside one)
  run apt-get $PM_OPTS update || _rc=$?
  if [ "$_rc" = 0 ]; then
    # shellcheck disable=SC2086
    run apt-get $PM_OPTS install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates || _rc=$?
  fi
  [ "$POLICY_RC_CREATED" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$APT_CONF_CREATED" = 1 ] && rm -f "$APT_CONF"
  POLICY_RC_CREATED=0
  APT_CONF_CREATED=0
  return "$_rc"
}

# True when a systemd unit for an SSH server exists (Debian: ssh.service; others: sshd.service).
has_ssh_unit() {
  for _dir in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    if [ -f "$_dir/ssh.service" ] || [ -f "$_dir/sshd.service" ]; then return 0; fi
  done
  return 1
}

install_packages() {
  if find_systemd; then
    step install "systemd is present but no SSH server is; installing systemd and an SSH server"
  else
    step install "systemd is missing; installing systemd and an SSH server"
  fi
  detect_family || fail "unsupported distribution (os-release ID='${OS_ID:-?}' ID_LIKE='${OS_LIKE:-}'): no known package manager to install systemd and openssh" \
    "use an image that already has systemd and openssh-server, or one based on Debian/Ubuntu, Alpine, Fedora/RHEL, Arch or openSUSE"
  log "distribution family: $FAMILY (ID=$OS_ID${OS_LIKE:+ ID_LIKE=$OS_LIKE})"
  _net_hint="the guest needs network access to its package mirrors: create the VM with --nat, and check DNS in /etc/resolv.conf"
  [ -n "$PKG_MIRROR" ] && _net_hint="the guest must reach the package mirror $PKG_MIRROR (it is used instead of the image's sources): check the URL, that it serves this release, and --nat or a route to it"
  pkg_source_setup
  set -f # PM_OPTS is split into words, never globbed (dnf's --disablerepo=*)
  # shellcheck disable=SC2086 # PM_OPTS: options without spaces inside one
  case "$FAMILY" in
    debian) install_debian || fail "apt-get could not install systemd and openssh-server" "$_net_hint" ;;
    alpine) run apk $PM_OPTS add --no-cache openrc openssh || fail "apk could not install openrc and openssh" "$_net_hint" ;;
    fedora)
      _dnf=dnf
      command -v dnf >/dev/null 2>&1 || { command -v microdnf >/dev/null 2>&1 && _dnf=microdnf; } || { command -v yum >/dev/null 2>&1 && _dnf=yum; }
      run "$_dnf" $PM_OPTS -y install systemd openssh-server iproute || fail "$_dnf could not install systemd and openssh-server" "$_net_hint"
      ;;
    arch) run pacman $PM_OPTS -Sy --noconfirm systemd openssh iproute2 || fail "pacman could not install systemd and openssh" "$_net_hint" ;;
    suse) run zypper $PM_OPTS -n install systemd openssh iproute2 || fail "zypper could not install systemd and openssh" "$_net_hint" ;;
  esac
  set +f
  pkg_source_cleanup
}

# sshd: banger's drop-in (/etc/ssh/sshd_config.d/banger.conf, injected with the image) only
# takes effect when sshd_config includes the directory; add the Include at the top if not.
configure_sshd() {
  [ -f /etc/ssh/sshd_config ] || return 0
  while IFS= read -r _line || [ -n "$_line" ]; do
    case "$_line" in
      Include*sshd_config.d*) return 0 ;;
    esac
  done </etc/ssh/sshd_config
  { echo "Include /etc/ssh/sshd_config.d/*.conf"; cat /etc/ssh/sshd_config; } >/etc/ssh/sshd_config.banger-tmp &&
    mv -f /etc/ssh/sshd_config.banger-tmp /etc/ssh/sshd_config
  log "added 'Include /etc/ssh/sshd_config.d/*.conf' to /etc/ssh/sshd_config"
}

enable_unit() { # NAME: symlink into multi-user.target.wants when the unit file exists
  _wants=/etc/systemd/system/multi-user.target.wants
  for _dir in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
    if [ -f "$_dir/$1" ]; then
      if [ -L "$_wants/$1" ] && [ -e "$_wants/$1" ]; then
        log "enabled $1 (already)"
        return 0
      fi
      [ -d "$_wants" ] || mkdir -p "$_wants"
      ln -sfn "$_dir/$1" "/etc/systemd/system/multi-user.target.wants/$1"
      log "enabled $1"
      return 0
    fi
  done
  return 1
}

configure_systemd() {
  step configure "ssh, machine-id and the guest agent"
  configure_sshd
  # Prepare mode leaves it empty: each VM of the prepared disk makes its own.
  if [ "$PREPARE" != 1 ] && [ ! -s /etc/machine-id ] && command -v systemd-machine-id-setup >/dev/null 2>&1; then
    systemd-machine-id-setup >/dev/null 2>&1 && log "generated /etc/machine-id"
  fi
  enable_unit ssh.service || enable_unit sshd.service || fail "no ssh.service or sshd.service unit after installing openssh" "install openssh-server in the image"
  enable_unit "$AGENT_UNIT" || fail "$AGENT_UNIT is missing" "the image was not prepared by banger's injection step; pull or import it again"
  # kmod-static-nodes runs `kmod static-nodes` whenever the modules disk gives it a
  # modules.devname; an image without kmod (docker.io's debian:bookworm) would fail the unit
  # and leave systemd "degraded". Masked for this boot only (/run), so installing kmod later
  # brings it back.
  if [ ! -x /bin/kmod ] && [ ! -x /usr/bin/kmod ] && [ "$TEST" != 1 ]; then
    mkdir -p /run/systemd/system 2>/dev/null && ln -sf /dev/null /run/systemd/system/kmod-static-nodes.service 2>/dev/null &&
      log "no kmod in the image: kmod-static-nodes.service masked for this boot"
  fi
}

configure_openrc() {
  step configure "OpenRC services (Alpine: no systemd)"
  configure_sshd
  if [ ! -e /etc/init.d/banger-vsock-agent ] && [ -f /usr/local/share/banger/openrc/banger-vsock-agent ]; then
    install_file /usr/local/share/banger/openrc/banger-vsock-agent /etc/init.d/banger-vsock-agent 0755
  fi
  for _svc in sshd banger-vsock-agent; do
    [ -e "/etc/init.d/$_svc" ] || fail "OpenRC service $_svc is missing"
    mkdir -p /etc/runlevels/default
    ln -sfn "/etc/init.d/$_svc" "/etc/runlevels/default/$_svc"
    log "enabled $_svc (OpenRC)"
  done
}

write_marker() {
  [ -d "${MARKER%/*}" ] || mkdir -p "${MARKER%/*}"
  _up=
  read -r _up _rest </proc/uptime 2>/dev/null || true
  { echo "banger-first-boot done"; echo "init=$1"; echo "uptime=${_up}"; } >"$MARKER" || true
}

exec_init() {
  step exec-init "$*"
  write_marker "$1"
  if [ "$TEST" = 1 ]; then
    log "test mode: would exec $*"
    exit 0
  fi
  exec "$@"
  fail "exec $1 failed"
}

# pkg_list FILE: the installed packages, one "NAME VERSION" line each, sorted (dpkg, apk, rpm,
# pacman); an empty file when no package database is known.
pkg_list() {
  if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' 2>/dev/null | while read -r _st _n _v; do
      [ "$_st" = installed ] && echo "$_n $_v"
    done
  elif command -v apk >/dev/null 2>&1; then
    apk info -v 2>/dev/null
  elif command -v rpm >/dev/null 2>&1; then
    rpm -qa --qf '%{NAME} %{VERSION}-%{RELEASE}\n' 2>/dev/null
  elif command -v pacman >/dev/null 2>&1; then
    pacman -Q 2>/dev/null
  fi | LC_ALL=C sort >"$1" 2>/dev/null || : >"$1"
}

# scrub: what must differ per VM, and what only the install needed, out of the prepared disk.
scrub() {
  step scrub "machine-id, SSH host keys, package lists and caches, logs, random seed"
  : >/etc/machine-id
  rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_* /root/.ssh/authorized_keys \
    /var/lib/systemd/random-seed /var/lib/systemd/credential.secret /var/lib/random-seed \
    /etc/banger/network.env /etc/banger/seed-version /etc/banger/mounts "$MARKER" "$ROOT_SIZE_FILE"
  if [ -d /var/lib/apt/lists ]; then find /var/lib/apt/lists -type f ! -name lock -exec rm -f {} + 2>/dev/null; fi
  rm -f /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/* 2>/dev/null
  rm -rf /var/cache/apk/* /var/cache/dnf/* /var/cache/yum/* /var/cache/pacman/pkg/* /var/cache/zypp/* /var/log/journal/* 2>/dev/null
  if [ -d /var/log ]; then find /var/log -type f -exec sh -c 'for f; do : >"$f"; done' sh {} + 2>/dev/null; fi
  find /tmp /var/tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null
  for _f in resolv.conf hostname hosts; do
    if [ -e "$ORIG_DIR/$_f" ] || [ -L "$ORIG_DIR/$_f" ]; then mv -f "$ORIG_DIR/$_f" "/etc/$_f"; else rm -f "/etc/$_f"; fi
  done
  true
}

# prepare_image: PREPARE=1. Install (when needed), configure, record the packages added, scrub,
# then end the VM cleanly; PID 1 never execs an init in this mode.
prepare_image() {
  step prepare "installing into the image's prepared disk"
  pkg_list /run/banger-pkgs.before
  if find_systemd && has_ssh_unit; then
    :
  elif [ -x /sbin/openrc ] && [ -f /etc/alpine-release ] && [ -e /etc/init.d/sshd ]; then
    FAMILY=alpine
  else
    install_packages
  fi
  if [ "${FAMILY:-}" = alpine ]; then
    configure_openrc
  else
    find_systemd || fail "systemd is still missing after installing packages" "install systemd in the image"
    has_ssh_unit || fail "no ssh.service or sshd.service unit after installing openssh" "install openssh-server in the image"
    configure_systemd
  fi
  step packages "recording what the install added"
  pkg_list /run/banger-pkgs.after
  [ -d "${PREPARED_PACKAGES%/*}" ] || mkdir -p "${PREPARED_PACKAGES%/*}"
  grep -vxF -f /run/banger-pkgs.before /run/banger-pkgs.after >"$PREPARED_PACKAGES" 2>/dev/null || :
  _n=0
  while read -r _l; do
    _n=$((_n + 1))
    log "added $_l"
  done <"$PREPARED_PACKAGES"
  log "the install added $_n packages (listed in $PREPARED_PACKAGES)"
  scrub
  step prepare-done "powering off"
  _up=
  read -r _up _rest </proc/uptime 2>/dev/null || true
  log "prepare done (at ${_up} s)"
  if [ "$TEST" = 1 ]; then
    log "test mode: would remount / read-only and reboot"
    exit 0
  fi
  cmdline_value banger.modules
  _rel=
  read -r _rel </proc/sys/kernel/osrelease 2>/dev/null || true
  [ -n "$_val" ] && [ -n "$_rel" ] && umount "/lib/modules/$_rel" 2>/dev/null
  sync
  mount -o remount,ro / 2>/dev/null || log "warning: cannot remount / read-only (the ext4 journal covers it)"
  sync
  echo b >/proc/sysrq-trigger
  reboot -f 2>/dev/null
  while :; do sleep 3600; done
}

main() {
  log "starting (pid $$)"
  mount_basics
  mount_modules
  apply_seed
  grow_root
  mount_shares
  if [ "$PREPARE" = 1 ]; then
    prepare_image
  fi
  if find_systemd && has_ssh_unit; then
    :
  elif [ -x /sbin/openrc ] && [ -f /etc/alpine-release ] && [ -e /etc/init.d/sshd ]; then
    configure_openrc
    exec_init /sbin/init
  else
    install_packages
    if [ "$FAMILY" = alpine ]; then
      configure_openrc
      exec_init /sbin/init
    fi
    find_systemd || fail "systemd is still missing after installing packages" "install systemd in the image"
    has_ssh_unit || fail "no ssh.service or sshd.service unit after installing openssh" "install openssh-server in the image"
  fi
  configure_systemd
  exec_init "$SYSTEMD" "$@"
}

main "$@"

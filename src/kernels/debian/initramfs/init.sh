#!/bin/sh
# banger initramfs /init (busybox sh, PID 1).
# Contract: for modular kernels (Debian's) that lack virtio built-ins and CONFIG_IP_PNP:
#   1. mount /proc /sys /dev (devtmpfs);
#   2. insmod every module listed in /lib/modules/banger.load (dependencies first);
#   3. apply ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf> (lo up, hostname);
#   4. wait (bounded by banger.rootwait=, default 10 s) for root=, mount it (rw|ro, rootfstype=
#      default ext4, rootflags=), move /dev /proc /sys into it;
#   5. exec switch_root /newroot ${init:-/sbin/init} with the kernel's extra arguments.
# On failure it prints one "banger-initramfs: ..." line on the console and stops the machine.
export PATH=/bin
set -f

log() { echo "banger-initramfs: $*"; }

fail() {
  echo "banger-initramfs: $*"
  echo "banger-initramfs: stopping the machine"
  sync 2>/dev/null
  sleep 1
  poweroff -f
  while :; do sleep 3600; done
}

mkdir -p /proc /sys /dev /newroot /run /tmp
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 tmpfs /dev
[ -e /dev/console ] || mknod -m 600 /dev/console c 5 1
[ -e /dev/null ] || mknod -m 666 /dev/null c 1 3

root=""
rootfstype=ext4
rootflags=""
mode=rw
init=/sbin/init
ipconf=""
rootwait=10
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root="${arg#root=}" ;;
    rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
    rootflags=*) rootflags="${arg#rootflags=}" ;;
    ro) mode=ro ;;
    rw) mode=rw ;;
    init=*) init="${arg#init=}" ;;
    ip=*) ipconf="${arg#ip=}" ;;
    banger.rootwait=*) rootwait="${arg#banger.rootwait=}" ;;
  esac
done

# 2. modules, in the order computed when the initramfs was built
if [ -f /lib/modules/banger.load ]; then
  while read -r ko; do
    [ -n "$ko" ] || continue
    insmod "$ko" 2>/tmp/insmod.err || {
      # "File exists" = already loaded; anything else is worth a line on the console
      grep -q 'exists' /tmp/insmod.err || log "warning: insmod $ko: $(cat /tmp/insmod.err)"
    }
  done </lib/modules/banger.load
fi

loaded_modules() {
  if [ -r /proc/modules ]; then
    while read -r name _rest; do printf '%s ' "$name"; done </proc/modules
  fi
}

# netmask a.b.c.d -> prefix length
mask2prefix() {
  n=0
  oldifs=$IFS; IFS=.
  for o in $1; do
    case "$o" in
      255) n=$((n + 8)) ;; 254) n=$((n + 7)) ;; 252) n=$((n + 6)) ;; 248) n=$((n + 5)) ;;
      240) n=$((n + 4)) ;; 224) n=$((n + 3)) ;; 192) n=$((n + 2)) ;; 128) n=$((n + 1)) ;;
    esac
  done
  IFS=$oldifs
  echo "$n"
}

# 3. network (a function, so `set --` does not clobber init's own arguments)
setup_ip() {
    oldifs=$IFS; IFS=:
    set -- $1
    IFS=$oldifs
    client="$1"; gw="$3"; mask="$4"; host="$5"; dev="$6"
    if [ -z "$dev" ]; then
      i=0
      while [ $i -lt 50 ]; do
        for d in /sys/class/net/*; do
          d="${d##*/}"
          [ "$d" = lo ] || [ ! -e "/sys/class/net/$d" ] || { dev="$d"; break; }
        done
        [ -n "$dev" ] && break
        sleep 0.1; i=$((i + 1))
      done
    else
      i=0
      while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    [ -n "$host" ] && hostname "$host"
    if [ -z "$dev" ] || [ ! -e "/sys/class/net/$dev" ]; then
      log "warning: network device ${dev:-(any)} for ip=$ipconf did not appear; loaded modules: $(loaded_modules)"
    elif [ -n "$client" ]; then
      prefix=32
      [ -n "$mask" ] && prefix=$(mask2prefix "$mask")
      ip addr add "$client/$prefix" dev "$dev" || log "warning: cannot add $client/$prefix to $dev"
      ip link set "$dev" up || log "warning: cannot bring $dev up"
      [ -n "$gw" ] && { ip route add default via "$gw" dev "$dev" || log "warning: cannot add default route via $gw"; }
    fi
}
ip link set lo up 2>/dev/null
case "$ipconf" in
  "" | off | none | dhcp | on | any | bootp | rarp | both) ;;
  *) setup_ip "$ipconf" ;;
esac

# 4. root device
[ -n "$root" ] || fail "no root= on the kernel command line; loaded modules: $(loaded_modules)"
case "$root" in
  /dev/*) ;;
  *) fail "root=$root is not supported (use a /dev/ path such as /dev/vda)" ;;
esac
i=0
limit=$((rootwait * 10))
while [ ! -b "$root" ] && [ $i -lt $limit ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$root" ] || fail "root device $root did not appear after ${rootwait}s; loaded modules: $(loaded_modules)"

opts=$mode
[ -n "$rootflags" ] && opts="$opts,$rootflags"
mount -t "$rootfstype" -o "$opts" "$root" /newroot 2>/tmp/mount.err ||
  fail "cannot mount root device $root (type $rootfstype, options $opts): $(cat /tmp/mount.err)"

if [ ! -e "/newroot$init" ] && [ ! -L "/newroot$init" ]; then
  fail "init $init does not exist on root device $root"
fi

for m in dev proc sys; do
  if [ -d "/newroot/$m" ]; then
    mount --move "/$m" "/newroot/$m" || umount -l "/$m"
  else
    umount -l "/$m" 2>/dev/null
  fi
done

# 5. hand over PID 1
exec switch_root /newroot "$init" "$@"

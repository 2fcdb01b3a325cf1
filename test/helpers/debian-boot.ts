import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Booting real guests under QEMU `microvm` (TCG) for kernel tests: a tiny busybox rootfs whose
 * init serves a token over HTTP, a network namespace with a tap the guest is wired to, and a
 * QEMU process with its serial console in a file. Everything is torn down by the caller's
 * `finally` (netns delete removes the tap; qemu is killed by pid).
 */

function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input, env: { ...process.env, LC_ALL: 'C' } });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Guest init for the test rootfs: brings nothing up itself (ip= is the initramfs's or kernel's job). */
const GUEST_INIT = `#!/bin/sh
export PATH=/bin
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
echo "banger-test-guest: init=$0 pid=$$"
echo "banger-test-guest: hostname=$(hostname) addr=$(ip -4 -o addr show 2>/dev/null | grep -v ' lo ' | sed 's/  */ /g')"
httpd -p 80 -h /www
echo "banger-test-guest: ready"
while :; do sleep 3600; done
`;

/**
 * Build an ext4 root filesystem (no mount, `mkfs.ext4 -d`) with a static busybox, an /sbin/init
 * (also reachable as /sbin/banger-test-init) that prints its name and PID and starts `httpd` on
 * port 80 serving `token` at /index.html. Returns the image path.
 */
export function buildTestRootfs(dir: string, busybox: string, token: string): string {
  const root = join(dir, 'rootfs');
  for (const d of ['bin', 'sbin', 'proc', 'sys', 'dev', 'www', 'tmp', 'etc']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'bin', 'busybox'), readFileSync(busybox));
  chmodSync(join(root, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'mount', 'httpd', 'sleep', 'echo', 'cat', 'ip', 'hostname', 'grep', 'sed']) symlinkSync('busybox', join(root, 'bin', a));
  writeFileSync(join(root, 'sbin', 'init'), GUEST_INIT, { mode: 0o755 });
  // the same init under another name, to check that init= is honoured
  symlinkSync('init', join(root, 'sbin', 'banger-test-init'));
  writeFileSync(join(root, 'www', 'index.html'), token + '\n');
  const img = join(dir, 'root.ext4');
  run(['mkfs.ext4', '-q', '-F', '-b', '4096', '-O', '^orphan_file', '-d', root, img, '32M']);
  return img;
}

/** Extract bin/busybox from a busybox-static .deb into `dir`; returns its path. */
export function busyboxFromDeb(deb: string, dir: string): string {
  const out = join(dir, 'busybox-deb');
  run(['dpkg-deb', '-x', deb, out]);
  return join(out, 'bin', 'busybox');
}

/** Host TSC frequency in kHz (TCG guests read the host TSC), from /proc/cpuinfo. */
export function hostTscKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return m ? Math.round(parseFloat(m[1]!) * 1000) : 2_000_000;
}

export interface TestNet {
  ns: string;
  tap: string;
  hostIp: string;
  guestIp: string;
  /** ip=<client>::<gw>:<netmask>:<hostname>:<dev>:off */
  ipArg(hostname: string): string;
  /** GET http://<guestIp>/ from inside the namespace; undefined while nothing answers. */
  get(path?: string): string | undefined;
  destroy(): void;
}

/** A network namespace with a tap (host side 172.30.<n>.1/24); the guest gets .2. */
export function createTestNet(tag: string): TestNet {
  const n = 100 + (process.pid % 150);
  const ns = `banger-${tag}-${process.pid}`;
  const tap = `bt${tag.slice(0, 6)}${process.pid % 10000}`.slice(0, 15);
  const hostIp = `172.30.${n}.1`;
  const guestIp = `172.30.${n}.2`;
  run(['ip', 'netns', 'add', ns]);
  const net: TestNet = {
    ns,
    tap,
    hostIp,
    guestIp,
    ipArg: (hostname) => `ip=${guestIp}::${hostIp}:255.255.255.0:${hostname}:eth0:off`,
    get(path = '/') {
      const r = spawnSync('ip', ['netns', 'exec', ns, 'curl', '-s', '--max-time', '3', `http://${guestIp}${path}`], { encoding: 'utf8' });
      return r.status === 0 ? r.stdout : undefined;
    },
    destroy() {
      spawnSync('ip', ['netns', 'delete', ns]);
    },
  };
  try {
    run(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    run(['ip', 'netns', 'exec', ns, 'ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    run(['ip', 'netns', 'exec', ns, 'ip', 'addr', 'add', `${hostIp}/24`, 'dev', tap]);
    run(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', tap, 'up']);
  } catch (e) {
    net.destroy();
    throw e;
  }
  return net;
}

export interface QemuGuest {
  proc: ChildProcess;
  consoleLog: string;
  console(): string;
  exited(): boolean;
  /** Resolves when `re` appears on the console (or rejects at the deadline / on exit). */
  waitConsole(re: RegExp, timeoutMs: number): Promise<string>;
  kill(): Promise<void>;
}

export interface BootOptions {
  kernel: string;
  initrd?: string;
  rootfs?: string;
  append: string;
  net?: TestNet;
  dir: string;
  /** Extra -M microvm options, e.g. "acpi=off". ACPI stays on by default (Debian's virtio_mmio binds via ACPI). */
  machine?: string;
  memMiB?: number;
}

/** Start qemu-system-x86_64 -M microvm (TCG) inside the test namespace. */
export function bootQemu(o: BootOptions): QemuGuest {
  const consoleLog = join(o.dir, `console-${Date.now()}.log`);
  const argv = [
    'qemu-system-x86_64',
    '-M',
    `microvm,x-option-roms=off,rtc=off${o.machine ? ',' + o.machine : ''}`,
    '-m',
    String(o.memMiB ?? 256),
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    o.kernel,
    ...(o.initrd ? ['-initrd', o.initrd] : []),
    '-append',
    o.append,
    '-serial',
    `file:${consoleLog}`,
    ...(o.rootfs ? ['-drive', `id=root,file=${o.rootfs},format=raw,if=none`, '-device', 'virtio-blk-device,drive=root'] : []),
    ...(o.net ? ['-netdev', `tap,id=n0,ifname=${o.net.tap},script=no,downscript=no`, '-device', 'virtio-net-device,netdev=n0,mac=06:00:ac:1e:00:02'] : []),
  ];
  const full = o.net ? ['ip', 'netns', 'exec', o.net.ns, ...argv] : argv;
  const proc = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const read = () => (existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8') : '');
  const g: QemuGuest = {
    proc,
    consoleLog,
    console: read,
    exited: () => proc.exitCode !== null || proc.signalCode !== null,
    async waitConsole(re, timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const text = read();
        if (re.test(text)) return text;
        if (g.exited()) throw new Error(`qemu exited (${proc.exitCode}) before ${re}: ${stderr}\n--- console ---\n${text.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${re}\n--- console ---\n${read().slice(-3000)}`);
    },
    async kill() {
      if (g.exited()) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await done;
    },
  };
  return g;
}

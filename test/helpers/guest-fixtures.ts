import { spawnSync } from 'node:child_process';
import { exec, type Exec } from '../../src/core/exec.js';
import type { VmNetwork } from '../../src/network/service.js';
import type { Subnet } from '../../src/network/subnet.js';
import type { KernelView } from '../../src/vms/deps.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import { vmFiles } from '../../src/vms/files.js';
import { launchSpec } from '../../src/vms/launch.js';
import { pidAlive } from '../../src/vms/proc.js';
import type { VmRecord } from '../../src/vms/store.js';
import { hostTscKhz, type TestNet } from './debian-boot.js';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { connect } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { ensureDebianRootfsTar } from './debootstrap.js';

/**
 * Fixtures for booting real guests with banger's guest files:
 * - a Debian bookworm root filesystem made once by debootstrap (from the host's configured
 *   Debian mirror, the one outside host these machines reach) and cached under
 *   /var/cache/banger-test/rootfs (BANGER_TEST_ROOTFS_CACHE);
 * - a seed disk exactly as the VM service lays it out (ssh keys, hostname, resolv.conf,
 *   network.env, version);
 * - a client for the agent's newline-delimited JSON over a Unix socket.
 */
export const ROOTFS_CACHE = process.env.BANGER_TEST_ROOTFS_CACHE || '/var/cache/banger-test/rootfs';

function run(argv: string[], opts: { cwd?: string; timeoutMs?: number } = {}): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', cwd: opts.cwd, timeout: opts.timeoutMs, env: { ...process.env, LC_ALL: 'C' } });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT')
    throw new Error(`test setup stalled: ${argv.join(' ')} ran longer than ${opts.timeoutMs! / 1000} s and was killed`);
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout).slice(-2000)}`);
  return r.stdout;
}

/** The host's Debian mirror URL (deb822 sources or sources.list), else deb.debian.org. */
export function debianMirrorUrl(): string {
  if (process.env.BANGER_TEST_DEBIAN_URL) return process.env.BANGER_TEST_DEBIAN_URL;
  for (const f of ['/etc/apt/sources.list.d/debian.sources', '/etc/apt/sources.list']) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf8');
    const m = /^URIs:\s*(\S+)/m.exec(text) ?? /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text);
    if (m && !m[1]!.includes('security')) return m[1]!;
  }
  return 'http://deb.debian.org/debian';
}

/**
 * A cached debootstrap'd bookworm tree. `systemd`: minbase + systemd-sysv, openssh-server,
 * iproute2 (what the e2e issue prescribes). Returns the cached directory (do not modify it:
 * copy it with copyTree). The .debs debootstrap downloaded are kept beside it in `<dir>.debs`.
 */
export function debootstrapRootfs(flavour: 'systemd' | 'minbase'): string {
  const dir = join(ROOTFS_CACHE, `bookworm-${flavour}`);
  return cachedTree(dir, (tmp) => {
    const include = flavour === 'systemd' ? ['--include=systemd-sysv,openssh-server,iproute2'] : [];
    run(['debootstrap', '--variant=minbase', ...include, 'bookworm', tmp, debianMirrorUrl()], { timeoutMs: 900_000 });
    const debs = `${dir}.debs`;
    rmSync(debs, { recursive: true, force: true });
    renameSync(join(tmp, 'var/cache/apt/archives'), debs);
    mkdirSync(join(tmp, 'var/cache/apt/archives/partial'), { recursive: true });
  });
}

/**
 * A cached tree at `dir`, built once by `fill(tmp)` into a temp sibling and landed by rename
 * with a completion marker; a failed build leaves nothing.
 */
function cachedTree(dir: string, fill: (tmp: string) => void): string {
  if (existsSync(join(dir, '.banger-complete'))) return dir;
  mkdirSync(ROOTFS_CACHE, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    fill(tmp);
    writeFileSync(join(tmp, '.banger-complete'), new Date().toISOString() + '\n');
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return dir;
}

/**
 * The Debian bookworm tree (minbase + systemd-sysv, openssh-server, iproute2, ca-certificates)
 * that the image tests also push to their registry, unpacked once from the same cached
 * debootstrap tar, so a CI run pays for one debootstrap, not two. Do not modify it: copyTree it.
 */
export async function debianSystemdTree(): Promise<string> {
  const tar = await ensureDebianRootfsTar();
  return cachedTree(join(ROOTFS_CACHE, basename(tar).replace(/\.tar$/, '')), (tmp) => {
    mkdirSync(tmp);
    run(['tar', '--extract', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-permissions', '-f', tar, '-C', tmp], { timeoutMs: 300_000 });
  });
}

/** Why debootstrap fixtures cannot be made here (undefined when they can). */
export function debootstrapUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (debootstrap)';
  if (spawnSync('which', ['debootstrap']).status !== 0) return 'debootstrap missing (scripts/install-deps.sh)';
  return undefined;
}

/** cp -a (reflink when possible) of a tree into `dest` (which must not exist). */
export function copyTree(src: string, dest: string): void {
  mkdirSync(dirname(dest), { recursive: true });
  run(['cp', '-a', '--reflink=auto', src, dest]);
  rmSync(join(dest, '.banger-complete'), { force: true });
}

/** ext4 image of `dir` (mkfs.ext4 -d, no mount), sparse, `size` like "2G". */
export function mkfsFromDir(dir: string, img: string, size: string, label?: string): void {
  run(['mkfs.ext4', '-q', '-F', '-b', '4096', '-O', '^orphan_file', ...(label ? ['-L', label] : []), '-E', 'root_owner=0:0', '-d', dir, img, size]);
}

export interface SeedKeys {
  /** banger's client private key (for ssh -i). */
  clientKey: string;
  /** known_hosts line pinning the guest's host key at `ip`. */
  knownHosts: string;
  /** A known_hosts file for the same address with a different key (must be refused). */
  wrongKnownHosts: string;
}

/**
 * A seed disk (label BANGERSEED) in the VM service's layout (version 1), with fresh keys.
 */
export function buildSeed(dir: string, o: { name: string; ip: string; prefix: number; gateway: string; dns: string }): { img: string; keys: SeedKeys } {
  const stage = join(dir, 'seed');
  const keys = join(dir, 'keys');
  mkdirSync(join(stage, 'ssh'), { recursive: true, mode: 0o700 });
  mkdirSync(keys, { recursive: true, mode: 0o700 });
  run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `${o.name}-host`, '-f', join(stage, 'ssh', 'ssh_host_ed25519_key')]);
  run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'banger-test', '-f', join(keys, 'id_ed25519')]);
  run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'other', '-f', join(keys, 'other')]);
  writeFileSync(join(stage, 'ssh', 'authorized_keys'), readFileSync(join(keys, 'id_ed25519.pub')), { mode: 0o600 });
  writeFileSync(join(stage, 'hostname'), `${o.name}\n`);
  writeFileSync(join(stage, 'resolv.conf'), `nameserver ${o.dns}\n`);
  writeFileSync(
    join(stage, 'network.env'),
    [
      `BANGER_IP=${o.ip}`,
      `BANGER_PREFIX=${o.prefix}`,
      `BANGER_GATEWAY=${o.gateway}`,
      'BANGER_IFACE=eth0',
      `BANGER_DNS="${o.dns}"`,
      `BANGER_VM_NAME=${o.name}`,
    ].join('\n') + '\n',
  );
  writeFileSync(join(stage, 'version'), '1\n');
  chmodSync(join(stage, 'ssh'), 0o700);
  const img = join(dir, 'seed.ext4');
  mkfsFromDir(stage, img, '8M', 'BANGERSEED');
  const pub = (f: string) => readFileSync(f, 'utf8').trim().split(' ').slice(0, 2).join(' ');
  writeFileSync(join(keys, 'known_hosts'), `${o.ip} ${pub(join(stage, 'ssh', 'ssh_host_ed25519_key.pub'))}\n`);
  writeFileSync(join(keys, 'wrong_known_hosts'), `${o.ip} ${pub(join(keys, 'other.pub'))}\n`);
  return { img, keys: { clientKey: join(keys, 'id_ed25519'), knownHosts: join(keys, 'known_hosts'), wrongKnownHosts: join(keys, 'wrong_known_hosts') } };
}

/** One request to the agent over a Unix socket; undefined when nothing answers in time. */
export function agentRequest(socketPath: string, request: string, timeoutMs = 5000): Promise<any> {
  return new Promise((resolve) => {
    const sock = connect(socketPath);
    let buf = '';
    const done = (v: unknown) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.on('error', () => done(undefined));
    sock.on('connect', () => sock.write(request + '\n'));
    sock.on('data', (d) => {
      buf += d.toString('utf8');
      const i = buf.indexOf('\n');
      if (i < 0) return;
      try {
        done(JSON.parse(buf.slice(0, i)));
      } catch {
        done({ unparsable: buf.slice(0, i) });
      }
    });
  });
}

/** Lists a directory, [] when missing. */
export function ls(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

/**
 * .debs outside debootstrap's set that banger-first-boot's apt-get install asks for
 * (ca-certificates and its openssl), fetched once with the host's `apt-get download` into
 * `<ROOTFS_CACHE>/extra-debs`.
 */
export function extraDebs(): string {
  return cachedTree(join(ROOTFS_CACHE, 'extra-debs'), (tmp) => {
    mkdirSync(tmp, { recursive: true });
    run(['apt-get', 'download', 'ca-certificates', 'openssl'], { cwd: tmp, timeoutMs: 300_000 });
  });
}

/**
 * A flat apt repository (`deb [trusted=yes] http://HOST/ ./`) in `dir` holding every .deb of
 * `debDirs` (copied), with Packages made by dpkg-scanpackages.
 */
export function flatRepo(dir: string, debDirs: string[]): string {
  mkdirSync(dir, { recursive: true });
  for (const d of debDirs) {
    for (const n of readdirSync(d).filter((f) => f.endsWith('.deb'))) {
      const dst = join(dir, n);
      if (existsSync(dst)) continue;
      run(['cp', '--reflink=auto', join(d, n), dst]);
    }
  }
  writeFileSync(join(dir, 'Packages'), run(['dpkg-scanpackages', '-m', '.', '/dev/null'], { cwd: dir }));
  return dir;
}

export interface GuestVm {
  pid: number;
  /** True while the VMM process runs. */
  alive(): boolean;
  console(): string;
  agentSock: string;
  kill(): Promise<void>;
}

export interface GuestBoot {
  dir: string;
  /** A kernel directory as fetchTestKernel / kernel pull make it (vmlinuz or vmlinux, initrd.img, modules.ext4). */
  kernelDir: string;
  rootImg: string;
  seedImg: string;
  net: TestNet;
  name: string;
}

/**
 * Boot a guest through the production path only: the VM service's launchSpec() (kernel choice,
 * disk order, the contract kernel command line, ACPI for an initramfs kernel, tsc_early_khz)
 * and QemuDriver.launch() (its argv, -daemonize, QMP, the agent's virtio-serial port), with the
 * driver's commands run inside the test's namespace (where the tap is). Nothing here writes a
 * QEMU argument itself. The VM's files live in `<dir>/vm` (console.log, agent.sock, qmp.sock).
 */
export async function bootGuest(o: GuestBoot): Promise<GuestVm> {
  const files = vmFiles(join(o.dir, 'vm'));
  rmSync(files.dir, { recursive: true, force: true });
  mkdirSync(files.dir, { recursive: true });
  copyFileSync(o.seedImg, files.seed);
  const k = (n: string) => (existsSync(join(o.kernelDir, n)) ? join(o.kernelDir, n) : undefined);
  const kernel: KernelView = {
    name: 'test-kernel',
    dir: o.kernelDir,
    vmlinuz: k('vmlinuz'),
    vmlinux: k('vmlinux'),
    initrd: k('initrd.img'),
    modulesImage: k('modules.ext4'),
  };
  const vm = {
    id: `guest${Date.now().toString(36)}`,
    name: o.name,
    ip: o.net.guestIp,
    spec: { vcpu: 2, memoryMiB: 1024, nat: false, firstBoot: true, rootDisk: { path: o.rootImg, format: 'raw' as const } },
  } as VmRecord & { ip: string };
  const subnet = { gateway: o.net.hostIp, netmask: '255.255.255.0', prefix: 24 } as Subnet;
  const net = { tap: o.net.tap, mac: '06:00:ac:1e:00:02' } as VmNetwork;
  const nsExec: Exec = ((argv: string[], opts?: Parameters<Exec>[1]) => exec(['ip', 'netns', 'exec', o.net.ns, ...argv], opts)) as Exec;
  const driver = new QemuDriver(nsExec, { qemu: 'qemu-system-x86_64' });
  const spec = launchSpec({ instance: '000000000000', vm, kernel, driver, files, net, subnet, kvm: false, tscKhz: hostTscKhz() });
  const { pid } = await driver.launch(spec);
  return {
    pid,
    alive: () => pidAlive(pid),
    agentSock: files.agent,
    console: () => (existsSync(files.console) ? readFileSync(files.console, 'utf8') : ''),
    kill: () => driver.kill({ id: vm.id, name: vm.name, files }, 'SIGKILL'),
  };
}

/** OpenSSH as root into the guest from inside its namespace, trusting only `knownHosts`. */
export function guestSsh(net: TestNet, keys: SeedKeys, knownHosts: string, cmd: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      net.ns,
      'ssh',
      '-F',
      '/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=yes',
      '-o',
      `UserKnownHostsFile=${knownHosts}`,
      '-o',
      'GlobalKnownHostsFile=/dev/null',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'ConnectTimeout=5',
      '-i',
      keys.clientKey,
      `root@${net.guestIp}`,
      cmd,
    ],
    { encoding: 'utf8', timeout: 60_000 },
  );
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Polls `probe` every second until it returns a value; throws with the console tail at the deadline or when QEMU exits. */
export async function until<T>(what: string, vm: GuestVm, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await probe();
    if (v !== undefined) return v;
    if (!vm.alive()) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`${what} not reached in ${timeoutMs} ms (qemu ${vm.alive() ? 'running' : 'exited'})\n--- console (tail) ---\n${vm.console().slice(-4000)}`);
}

import { kvmUsable, realHost, type HostProbe, type NodeRuntime } from '../core/host.js';
import { errorMessage } from '../core/errors.js';
import { firecrackerVersion, MIN_FIRECRACKER, versionSupported } from '../core/firecracker-version.js';

import { detectCgroups, NEEDED_CONTROLLERS } from '../core/cgroup.js';
/** The probe and KVM test live in core (vms uses them too); re-exported for the doctor's callers. */
export { kvmUsable, realHost, type HostProbe, type NodeRuntime };

/** A named preflight check. Users can skip one by name (`--skip kvm`). */
export interface CheckResult {
  name: string;
  status: 'pass' | 'warn' | 'fail';
  detail: string;
  hint?: string;
}

export interface Check {
  name: string;
  description: string;
  run(host: HostProbe): Promise<CheckResult>;
}

/** The oldest Node.js banger runs on (node:sqlite, zlib zstd streams, undici 8). */
export const MIN_NODE = [22, 19] as const;

export function currentRuntime(): NodeRuntime {
  return { path: process.execPath, version: process.version, lts: process.release.lts };
}

export function runtimeSupported(version: string): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
}

const tool = (name: string, cmd: string, hint: string, level: 'warn' | 'fail' = 'fail'): Check => ({
  name,
  description: `${cmd} is installed`,
  async run(h) {
    const p = await h.which(cmd);
    return p ? { name, status: 'pass', detail: p } : { name, status: level, detail: `${cmd} not found`, hint };
  },
});

/**
 * `banger doctor` check `firecracker`: the configured binary (`binaries.firecracker`, env
 * BANGER_FIRECRACKER, then PATH) and its version (`firecracker --version`). Absent: warn
 * (optional; QEMU runs VMs). Present but older than 1.5, or not answering: fail.
 */
const firecrackerCheck: Check = {
  name: 'firecracker',
  description: `firecracker ${MIN_FIRECRACKER.join('.')} or newer is installed (optional)`,
  async run(h) {
    let bin = 'firecracker';
    try {
      // loaded lazily: zod and the config schema stay out of every other CLI command's start
      const { loadConfig } = await import('../core/config.js');
      bin = loadConfig().binaries.firecracker;
    } catch {
      /* a bad config file is reported by the daemon; probe the default name */
    }
    const path = await h.which(bin);
    if (!path)
      return {
        name: 'firecracker',
        status: 'warn',
        detail: `${bin} not found`,
        hint: 'optional: install firecracker to use --vmm firecracker (needs usable KVM); see docs/firecracker.md',
      };
    try {
      const v = await firecrackerVersion(path);
      if (!versionSupported(v))
        return {
          name: 'firecracker',
          status: 'fail',
          detail: `${path} is v${v}, older than ${MIN_FIRECRACKER.join('.')}`,
          hint: `install Firecracker ${MIN_FIRECRACKER.join('.')} or newer (request bodies are checked against the v1.5.0 and v1.16.1 APIs)`,
        };
      return { name: 'firecracker', status: 'pass', detail: `${path} v${v}` };
    } catch (e) {
      return { name: 'firecracker', status: 'fail', detail: errorMessage(e), hint: `check that ${path} is a Firecracker binary` };
    }
  },
};

export const checks: Check[] = [
  {
    name: 'node',
    description: `the Node.js runtime is ${MIN_NODE.join('.')} or newer`,
    async run(h) {
      const rt = h.runtime?.() ?? currentRuntime();
      const detail = `${rt.path} ${rt.version}${rt.lts ? ` (LTS ${rt.lts})` : ' (not an LTS release)'}`;
      return runtimeSupported(rt.version)
        ? { name: 'node', status: 'pass', detail }
        : {
            name: 'node',
            status: 'fail',
            detail,
            hint: `banger needs Node.js >= ${MIN_NODE.join('.')}: run scripts/install-deps.sh (installs the project's pinned Node.js 24) or install the .deb, which brings its own`,
          };
    },
  },
  {
    name: 'kvm',
    description: 'hardware virtualisation is usable',
    async run(h) {
      const k = await kvmUsable(h);
      return k.usable
        ? { name: 'kvm', status: 'pass', detail: k.reason }
        : { name: 'kvm', status: 'warn', detail: k.reason, hint: 'VMs will run under QEMU TCG (software emulation): slower, but they work' };
    },
  },
  firecrackerCheck,
  tool('qemu', 'qemu-system-x86_64', 'apt-get install qemu-system-x86 qemu-utils'),
  tool('mkfs.ext4', 'mkfs.ext4', 'apt-get install e2fsprogs'),
  tool('debugfs', 'debugfs', 'apt-get install e2fsprogs'),
  tool('ip', 'ip', 'apt-get install iproute2'),
  {
    name: 'nat',
    description: 'nft or iptables for --nat',
    async run(h) {
      const nft = await h.which('nft');
      if (nft) return { name: 'nat', status: 'pass', detail: `nft (${nft})` };
      const ipt = await h.which('iptables');
      if (ipt) return { name: 'nat', status: 'pass', detail: `iptables fallback (${ipt})` };
      return { name: 'nat', status: 'fail', detail: 'neither nft nor iptables found', hint: 'apt-get install nftables' };
    },
  },
  tool('ssh', 'ssh', 'apt-get install openssh-client'),
  tool('gpgv', 'gpgv', 'apt-get install gpgv (verifies Debian archive kernels)'),
  tool('dpkg-deb', 'dpkg-deb', 'apt-get install dpkg (unpacks Debian kernel packages)'),
  tool('lz4', 'lz4', 'apt-get install lz4 (Debian 12 kernels are LZ4-compressed)'),
  tool('depmod', 'depmod', "apt-get install kmod (indexes a Debian kernel's modules for the guest)"),
  {
    name: 'debian-keyring',
    description: "Debian's archive keyring, to verify InRelease",
    async run(h) {
      const p = '/usr/share/keyrings/debian-archive-keyring.gpg';
      return (await h.readFile(p)) !== undefined
        ? { name: 'debian-keyring', status: 'pass', detail: p }
        : { name: 'debian-keyring', status: 'warn', detail: `${p} missing`, hint: "apt-get install debian-archive-keyring (or set config 'debianKeyring')" };
    },
  },
  {
    name: 'tun',
    description: '/dev/net/tun for VM network taps',
    async run(h) {
      return (await h.canReadWrite('/dev/net/tun'))
        ? { name: 'tun', status: 'pass', detail: '/dev/net/tun read-write' }
        : { name: 'tun', status: 'fail', detail: '/dev/net/tun missing or not accessible', hint: 'modprobe tun (and run as root)' };
    },
  },
  {
    name: 'ip_forward',
    description: 'IPv4 forwarding for --nat',
    async run(h) {
      const v = (await h.readFile('/proc/sys/net/ipv4/ip_forward'))?.trim();
      return v === '1'
        ? { name: 'ip_forward', status: 'pass', detail: 'net.ipv4.ip_forward=1' }
        : { name: 'ip_forward', status: 'warn', detail: `net.ipv4.ip_forward=${v ?? 'unknown'}`, hint: 'bangerd turns it on when a VM is created with --nat' };
    },
  },
  {
    name: 'cgroup',
    description: 'cgroup for per-VM resource limits (memory, pids, cpu): v2, else v1',
    async run(h) {
      const host = await detectCgroups((p) => h.readFile(p));
      if (host.version === 2) return { name: 'cgroup', status: 'pass', detail: `banger uses cgroup v2 at ${host.mount} (${NEEDED_CONTROLLERS.join(', ')})` };
      if (host.version === 1)
        return {
          name: 'cgroup',
          status: 'pass',
          detail: `banger uses cgroup v1: ${NEEDED_CONTROLLERS.map((c) => `${c} at ${host.mounts[c]}`).join(', ')} (the unified hierarchy lacks them)`,
        };
      return {
        name: 'cgroup',
        status: 'warn',
        detail: host.reason,
        hint: 'VMs run without memory/pids limits and --cpu-quota is refused; mount cgroup v2 with the memory, pids and cpu controllers (or their v1 hierarchies)',
      };
    },
  },
];

export async function runChecks(host: HostProbe = realHost, skip: string[] = []): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const c of checks) {
    if (skip.includes(c.name)) continue;
    out.push(await c.run(host));
  }
  return out;
}

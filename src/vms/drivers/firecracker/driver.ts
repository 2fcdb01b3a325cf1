import type { Socket } from 'node:net';
import { basename, dirname } from 'node:path';
import { readFile, writeFile } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import type {
  BootKernel,
  DiskSpec,
  DriverFeatures,
  DriverHost,
  KernelFiles,
  LaunchSpec,
  ProbeResult,
  RootDiskRequest,
  VmHandle,
  VmmDriver,
  VmmStatus,
} from '../types.js';
import { bootFirecracker } from './boot.js';
import { rawRootCopy, type RawCopyMethod } from './disk.js';
import { fcFiles } from './files.js';
import { findFirecracker, killFirecracker, stopFirecracker } from './process.js';
import type { FcBootConfig } from './requests.js';
import { firecrackerVersion, MIN_FIRECRACKER, versionSupported } from '../../../core/firecracker-version.js';
import { FirecrackerSnapshots } from './snapshot.js';
import { connectHybridVsock } from './vsock.js';
import { jailedFiles, launchJailed, releaseJail } from './jailed.js';
import type { DriverDeps } from '../types.js';

type JailerSettings = NonNullable<NonNullable<DriverDeps['firecracker']>['jailer']>;

/** The guest agent's AF_VSOCK port (src/guest/agent: DEFAULT_VSOCK_PORT). */
export const AGENT_VSOCK_PORT = 1024;

/**
 * Firecracker (KVM only). Boots the ELF `vmlinux` of a kernel record; root disk = a raw
 * reflink/sparse copy of the image's base rootfs; configured over its API socket as named
 * steps (boot.ts); serial console → console.log; the guest agent over hybrid vsock (port 1024).
 * Its processes carry `--id bg-<instance>-<vm id>` and `--api-sock <vm dir>/firecracker.sock`
 * (jailed: `--api-sock /run/<vm name>/firecracker.sock` in the chroot, see jailed.ts; ownerOf reads both; Firecracker ids allow only alphanumerics and '-', ≤ 64 chars).
 *
 * Selection (`probe`): usable for `auto` only when the binary is found AND KVM is usable; with
 * the binary but no usable KVM it is `explicitOnly`: `--vmm firecracker` still runs it and
 * reports Firecracker's own error if it cannot start.
 */
export class FirecrackerDriver implements VmmDriver {
  readonly kind = 'firecracker' as const;
  /**
   * No shared-folder device (`vm cp` copies files); snapshots through its API (snapshot.ts); the
   * agent over hybrid vsock. Under the jailer the VMM's cgroup is the jailer's own (`--cgroup`,
   * jailer.ts): `ownCgroup`.
   */
  readonly features: DriverFeatures;
  readonly snapshots: FirecrackerSnapshots;
  constructor(
    private readonly exec: Exec,
    private readonly opts: { firecracker: string; socketTimeoutMs?: number; jailer?: JailerSettings },
  ) {
    this.features = { mounts: false, snapshots: true, vsock: true, ownCgroup: !!opts.jailer };
    this.snapshots = new FirecrackerSnapshots({
      exec,
      binary: opts.firecracker,
      socketTimeoutMs: opts.socketTimeoutMs,
      jailed: !!opts.jailer,
      instanceId: (spec) => fcInstanceId(spec.instance, spec.id),
    });
  }

  async probe(host: DriverHost): Promise<ProbeResult> {
    const bin = this.opts.firecracker;
    const path = await host.probe.which(bin);
    if (!path) {
      return {
        usable: false,
        kvm: host.kvm.usable,
        reason: 'binary not found',
        error: `--vmm firecracker: binary '${bin}' not found`,
        hint: 'install firecracker (https://github.com/firecracker-microvm/firecracker/releases) and set binaries.firecracker, or use --vmm qemu',
      };
    }
    let version: string;
    try {
      version = await firecrackerVersion(path, this.exec);
    } catch (e) {
      return {
        usable: false,
        kvm: host.kvm.usable,
        reason: `'${bin} --version' failed`,
        error: `--vmm firecracker: ${errorMessage(e)}`,
        hint: `check that ${bin} is a Firecracker binary`,
      };
    }
    if (!versionSupported(version)) {
      return {
        usable: false,
        kvm: host.kvm.usable,
        reason: `v${version} is older than ${MIN_FIRECRACKER.join('.')}`,
        error: `--vmm firecracker: ${bin} is v${version}; banger needs Firecracker ${MIN_FIRECRACKER.join('.')} or newer`,
        hint: 'install a newer Firecracker release',
      };
    }
    if (!host.kvm.usable) return { usable: true, explicitOnly: true, kvm: false, reason: `KVM not usable: ${host.kvm.reason}` };
    return { usable: true, kvm: true, reason: `v${version}, accel kvm` };
  }

  /** Firecracker v1.16 boots only an uncompressed ELF `vmlinux` on x86_64. */
  bootKernel(k: KernelFiles): BootKernel {
    if (k.vmlinux) return { format: 'elf-vmlinux', path: k.vmlinux };
    throw new BangerError(
      ErrorCode.NotFound,
      `kernel '${k.name}' has no ELF vmlinux, which Firecracker needs (it has ${k.vmlinuz ? 'only a bzImage' : 'no kernel file'})`,
      {
        hint: 'import a kernel with a vmlinux, e.g. the generic all-built-in kernel (scripts/make-generic-kernel.sh, docs/firecracker.md), or use --vmm qemu',
        details: { kernel: k.name },
      },
    );
  }

  rootDisk(vm: VmHandle): Omit<DiskSpec, 'id'> {
    return { path: vm.files.rootRaw, format: 'raw' };
  }

  async prepareRootDisk(r: RootDiskRequest): Promise<DiskSpec> {
    const disk: DiskSpec = { id: 'root', ...this.rootDisk(r.vm) };
    const method = await rawRootCopy(this.exec, r.baseRootfs, disk.path, { sizeBytes: r.sizeBytes, signal: r.signal });
    await writeFile(fcFiles(r.vm.files.dir).rootMethod, `${method}\n`);
    return disk;
  }

  /** How the root disk was made ('reflink' | 'sparse'), for `vm show`; undefined when unknown. */
  async rootDiskMethod(vm: VmHandle): Promise<RawCopyMethod | undefined> {
    const m = (await readFile(fcFiles(vm.files.dir).rootMethod, 'utf8').catch(() => '')).trim();
    return m === 'reflink' || m === 'sparse' ? m : undefined;
  }

  async launch(spec: LaunchSpec, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    const files = fcFiles(spec.files.dir);
    for (const d of spec.disks) {
      if (d.format !== 'raw')
        throw new BangerError(ErrorCode.Invalid, `firecracker: disk ${d.id} (${d.path}) is ${d.format}; Firecracker attaches raw disks only`, {
          details: { step: `drive-${d.id}` },
        });
    }
    if (spec.kernelFormat !== 'elf-vmlinux')
      throw new BangerError(ErrorCode.Invalid, `firecracker: kernel ${spec.kernel} is a ${spec.kernelFormat}; Firecracker v1.16 boots an ELF vmlinux`, {
        details: { step: 'boot-source' },
      });
    const config: FcBootConfig = {
      vcpu: spec.vcpu,
      memoryMiB: spec.memoryMiB,
      kernel: spec.kernel,
      initrd: spec.initrd,
      bootArgs: firecrackerBootArgs(spec.cmdline),
      disks: spec.disks.map((d) => ({ id: d.id, path: d.path, readOnly: d.readOnly })),
      net: spec.net,
      vsock: { cid: guestCidFor(spec.id), udsPath: files.vsock },
      logPath: files.log,
      metricsPath: files.metrics,
      ...(spec.diskLimits ? { diskLimits: spec.diskLimits } : {}),
    };
    const j = this.opts.jailer;
    if (j) {
      // With limits, the jailer is told the host's cgroup version (vms/limits.ts detected it) and the limits (--cgroup).
      const jailer = {
        binary: j.binary,
        chrootBase: j.chrootBaseDir,
        uidBase: j.uidBase,
        cgroupVersion: spec.cgroup?.version ?? j.cgroupVersion,
        parentCgroup: j.parentCgroup,
        ...(spec.cgroup ? { limits: spec.cgroup.limits } : {}),
      };
      return launchJailed({
        jailer,
        firecracker: this.opts.firecracker,
        id: fcInstanceId(spec.instance, spec.id),
        spec,
        config,
        signal: o.signal,
        socketTimeoutMs: this.opts.socketTimeoutMs,
      });
    }
    return bootFirecracker({
      cgroup: spec.cgroup?.procs,
      binary: this.opts.firecracker,
      id: fcInstanceId(spec.instance, spec.id),
      files,
      consolePath: spec.files.console,
      config,
      signal: o.signal,
      socketTimeoutMs: this.opts.socketTimeoutMs,
    });
  }

  async status(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus> {
    const f = await findFirecracker(await jailedFiles(vm.files.dir), { pidHint });
    return f ? { running: true, pid: f.pid } : { running: false };
  }

  /** After a daemon restart: the pid file's process is this VM's Firecracker and `GET /` answers. */
  async adopt(vm: VmHandle, pidHint?: number | null): Promise<VmmStatus> {
    const f = await findFirecracker(await jailedFiles(vm.files.dir), { pidHint, probe: true });
    // A live process of ours whose API does not answer is still running (hung): stop/kill handle it.
    return f ? { running: true, pid: f.pid } : { running: false };
  }

  async stop(vm: VmHandle, o: { timeoutMs: number; guestShutdown?: () => Promise<void> }): Promise<{ forced: boolean }> {
    if (o.guestShutdown) void o.guestShutdown().catch(() => undefined);
    const r = await stopFirecracker(await jailedFiles(vm.files.dir), o.timeoutMs);
    await releaseJail(vm.files.dir);
    return r;
  }

  /** A jailed VM's jail goes with its process (stop, kill, `vm rm`); its disks stay in the VM directory. */
  async kill(vm: VmHandle, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const files = await jailedFiles(vm.files.dir);
    await killFirecracker(files, signal);
    if (!(await findFirecracker(files))) await releaseJail(vm.files.dir);
  }

  consolePath(vm: VmHandle): string {
    return vm.files.console;
  }

  ownerOf(argv: string[]): { instance: string; vm: string } | undefined {
    const id = argValue(argv, '--id');
    const sock = argValue(argv, '--api-sock');
    const m = id ? /^bg-([0-9a-f]{12})-[0-9a-f]+$/.exec(id) : null;
    if (!m || !sock || basename(sock) !== 'firecracker.sock') return undefined;
    return { instance: m[1]!, vm: basename(dirname(sock)) };
  }

  openAgentStream(vm: VmHandle, o: { signal?: AbortSignal; timeoutMs: number }): Promise<Socket> {
    return jailedFiles(vm.files.dir).then((f) => connectHybridVsock(f.vsock, AGENT_VSOCK_PORT, o));
  }
}

function argValue(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i >= 0) return argv[i + 1];
  return argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
}

/** Firecracker's `--id`: `bg-<instance>-<vm id>` (36 chars, alphanumerics and '-'). */
export function fcInstanceId(instance: string, vmId: string): string {
  return `bg-${instance}-${vmId}`;
}

/**
 * Boot args for Firecracker from banger's command line: `reboot=k` (a guest reboot or
 * Ctrl-Alt-Del resets through the i8042, which Firecracker turns into a clean exit) instead
 * of QEMU's `reboot=t`, and `panic=1`. Firecracker itself appends `pci=off`, `root=/dev/vda`
 * and the `virtio_mmio.device=` entries.
 */
export function firecrackerBootArgs(cmdline: string): string {
  const parts = cmdline.split(/\s+/).filter((p) => p && !p.startsWith('reboot=') && !p.startsWith('panic='));
  return [...parts, 'reboot=k', 'panic=1'].join(' ');
}

/**
 * The guest CID of a VM: ≥ 3 (0-2 are reserved), derived from the VM id so it is stable across
 * restarts and, with 2^32 values, distinct between VMs in practice. With hybrid vsock the CID
 * is private to each Firecracker process (no host vhost-vsock), so a clash would be harmless.
 */
export function guestCidFor(vmId: string): number {
  const n = Number.parseInt(vmId.slice(0, 8), 16);
  return 3 + ((Number.isFinite(n) ? n : 0) % (0xffffffff - 3));
}

import { createHash } from 'node:crypto';
import { link, mkdir, rm, stat } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import { toolEnv } from '../../../core/exec.js';
import { pidAlive, readPidFile, waitExit } from '../../proc.js';
import type { LaunchSpec, SnapshotFiles, SnapshotMeta, SnapshotSaveOptions, VmHandle, VmSnapshots } from '../types.js';
import { qemuArgv, qemuLaunch, type QemuLaunch } from './argv.js';
import { QmpSession } from './qmp.js';
import { parseMeta, verifiedMeta, writeMeta } from '../snapshot-meta.js';

/**
 * QEMU save/restore through its migration stream (QEMU 7.2 has no `file:` URI, so the stream
 * goes through `exec:cat`, with the path single-quoted for the `/bin/sh -c` QEMU runs it in).
 * - save: QMP `stop`, (`x-ignore-shared` when RAM lives in a shared file: the stream then holds
 *   device state only), `migrate` to `state`, poll `query-migrate`; the root disk is copied
 *   (sparse, reflink when possible) while the guest is stopped; `meta` last; then `quit` or `cont`.
 * - restore: the same argv plus `-incoming defer` (RAM mapped privately from `memory` when the
 *   state kept it apart), `migrate-incoming`, wait until QEMU leaves `inmigrate`, `cont`.
 * The fingerprint covers what device state depends on and nothing per VM (paths, tap, MAC, the
 * command line with its IP and hostname: the guest already booted with the saved one).
 */
export class QemuSnapshots implements VmSnapshots {
  private version?: Promise<string>;

  constructor(
    private readonly exec: Exec,
    private readonly qemu: string,
    private readonly launchVmm: (argv: string[], spec: LaunchSpec, signal?: AbortSignal) => Promise<{ pid: number }>,
    private readonly killVmm: (vm: VmHandle) => Promise<void>,
  ) {}

  async fingerprint(spec: LaunchSpec): Promise<{ vmmVersion: string; fingerprint: string }> {
    const q = qemuLaunch(spec);
    const id = async (p?: string) => {
      if (!p) return null;
      const s = await stat(p).catch(() => undefined);
      return s ? { p, size: s.size, mtime: Math.floor(s.mtimeMs) } : { p };
    };
    const shape = {
      vcpu: q.vcpu,
      memoryMiB: q.memoryMiB,
      machine: { acpi: q.acpi, kvm: q.kvm },
      kernel: { format: q.kernelFormat, file: await id(q.kernel), initrd: await id(q.initrd) },
      disks: q.disks.map((d) => `${d.id}:${d.format}:${d.readOnly ? 'ro' : 'rw'}`),
    };
    const fingerprint = createHash('sha256').update(JSON.stringify(shape)).digest('hex');
    return { vmmVersion: await this.vmmVersion(), fingerprint };
  }

  check(spec: LaunchSpec): string | undefined {
    if (spec.mounts?.length) return 'it has a host folder (--mount): virtiofs is unmigratable and 9p cannot be saved while mounted';
    return undefined;
  }

  async save(vm: VmHandle, spec: LaunchSpec, to: SnapshotFiles, o: SnapshotSaveOptions): Promise<SnapshotMeta> {
    const why = this.check(spec);
    if (why) throw new BangerError(ErrorCode.Invalid, `vm '${vm.name}' cannot be snapshotted: ${why}`, { hint: 'create the VM without --mount' });
    const { vmmVersion, fingerprint } = await this.fingerprint(spec);
    const pid = await readPidFile(vm.files.pid);
    if (!pid || !pidAlive(pid)) throw new BangerError(ErrorCode.Vmm, `vm '${vm.name}' is not running`);
    const shared = !!spec.memoryFile;
    if (shared && o.then === 'resume' && spec.memoryFile === to.memory)
      throw new BangerError(ErrorCode.Internal, 'a VM whose RAM file is the snapshot memory cannot run on after the save');
    const root = spec.disks.find((d) => d.id === 'root');
    await mkdir(to.dir, { recursive: true, mode: 0o700 });
    const made: string[] = [];
    const qmp = await QmpSession.open(vm.files.qmp);
    let stopped = false;
    try {
      await qmp.cmd('stop');
      stopped = true;
      await qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: shared }] });
      made.push(to.state);
      await qmp.cmd('migrate', { uri: `exec:cat > ${shq(to.state)}` });
      await waitMigrated(qmp, o.signal);
      if (shared && spec.memoryFile !== to.memory) {
        made.push(to.memory);
        // Exit: the file is done with, a hard link keeps it; resume: the guest writes on, copy it now.
        if (o.then === 'exit') await link(spec.memoryFile!, to.memory).catch(() => this.copy(spec.memoryFile!, to.memory, o.signal));
        else await this.copy(spec.memoryFile!, to.memory, o.signal);
      }
      if (!o.keepDisk) {
        if (!root) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no root disk`);
        made.push(to.disk);
        await this.copy(root.path, to.disk, o.signal);
      }
      const meta = await writeMeta<SnapshotMeta>(
        to,
        { vmm: 'qemu', vmmVersion, fingerprint, vcpu: spec.vcpu, memoryMiB: spec.memoryMiB, sharedMemory: shared, createdAt: new Date().toISOString() },
        { memory: shared, disk: !o.keepDisk },
      );
      if (o.then === 'exit') {
        await qmp.cmd('quit').catch(() => undefined);
        await waitExit(pid, 10000);
        await this.killVmm(vm); // SIGKILL if it lingers; removes the sockets and pid file
      } else await qmp.cmd('cont');
      return meta;
    } catch (e) {
      await rm(`${to.meta}.tmp`, { force: true });
      for (const f of made) await rm(f, { force: true });
      if (stopped) await qmp.cmd('migrate_cancel').catch(() => undefined);
      if (stopped) await qmp.cmd('cont').catch(() => undefined); // the guest runs again whatever happened
      throw e instanceof BangerError ? e : new BangerError(ErrorCode.Vmm, `saving vm '${vm.name}': ${errorMessage(e)}`, { cause: e });
    } finally {
      qmp.close();
    }
  }

  async restore(spec: LaunchSpec, from: SnapshotFiles, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    const meta = await this.verify(spec, from);
    const q: QemuLaunch = { ...qemuLaunch(spec), incoming: true };
    if (meta.sharedMemory) q.memory = { kind: 'file', path: from.memory, share: false };
    const handle: VmHandle = { id: spec.id, name: spec.name, files: spec.files };
    const { pid } = await this.launchVmm(qemuArgv(this.qemu, q), spec, o.signal);
    try {
      const qmp = await QmpSession.open(spec.files.qmp);
      try {
        await qmp.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: meta.sharedMemory }] });
        await qmp.cmd('migrate-incoming', { uri: `exec:cat ${shq(from.state)}` });
        for (;;) {
          o.signal?.throwIfAborted();
          const st = (await qmp.cmd('query-status')) as { status?: string };
          if (st.status !== 'inmigrate') break;
          await sleep(10);
        }
        const m = (await qmp.cmd('query-migrate')) as { status?: string; 'error-desc'?: string };
        if (m.status && m.status !== 'completed')
          throw new BangerError(ErrorCode.Conflict, `the saved state in ${from.dir} did not load: ${m['error-desc'] ?? m.status}`);
        await qmp.cmd('cont');
      } finally {
        qmp.close();
      }
      return { pid };
    } catch (e) {
      await this.killVmm(handle);
      if (e instanceof BangerError) throw e;
      // QEMU exits when the stream does not load: name the state, not the socket.
      throw new BangerError(ErrorCode.Conflict, `the saved state in ${from.dir} did not load: ${errorMessage(e)}`, {
        hint: `see ${spec.files.console}`,
        cause: e,
      });
    }
  }

  /** The state's meta, checked against `spec` and against its files (E_CONFLICT naming what differs). */
  private async verify(spec: LaunchSpec, from: SnapshotFiles): Promise<SnapshotMeta> {
    return verifiedMeta({
      from,
      spec,
      kind: 'qemu',
      now: await this.fingerprint(spec),
      parse: parseMeta,
      versionHint: 'make the snapshot again',
      machine: 'kernel, initrd, disks or accelerator',
    });
  }

  private vmmVersion(): Promise<string> {
    this.version ??= this.exec([this.qemu, '--version'], { env: toolEnv() }).then((r) => r.stdout.split('\n')[0]!.trim());
    this.version.catch(() => (this.version = undefined));
    return this.version;
  }

  private async copy(src: string, dst: string, signal?: AbortSignal): Promise<void> {
    await this.exec(['cp', '--sparse=always', '--reflink=auto', src, dst], { env: toolEnv(), signal, timeoutMs: 600_000 });
  }
}

/** Poll `query-migrate` until it completes; E_VMM when it fails or is cancelled. */
async function waitMigrated(qmp: QmpSession, signal?: AbortSignal): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    const r = (await qmp.cmd('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled')
      throw new BangerError(ErrorCode.Vmm, `migration ${r.status}: ${r['error-desc'] ?? 'no reason given'}`);
    await sleep(20);
  }
}

/** A path as one /bin/sh word (QEMU runs an `exec:` URI with `sh -c`). */
export function shq(s: string): string {
  if (s.includes('\0')) throw new BangerError(ErrorCode.Invalid, 'a path with a NUL byte');
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

import { createHash } from 'node:crypto';
import { mkdir, rm, stat } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import type { Exec } from '../../../core/exec.js';
import { firecrackerVersion } from '../../../core/firecracker-version.js';
import { UndoStack } from '../../../core/undo.js';
import { fileSize, metaString, parseMeta, snapshotConflict, verifiedMeta, writeMeta } from '../snapshot-meta.js';
import type { LaunchSpec, SnapshotFiles, SnapshotMeta, SnapshotSaveOptions, VmHandle, VmSnapshots } from '../types.js';
import { FirecrackerApi } from './api.js';
import type { FcRequest } from './api-types.js';
import { rawRootCopy } from './disk.js';
import { fcFiles } from './files.js';
import { jailedFiles } from './jailed.js';
import { killFirecracker, spawnFirecracker } from './process.js';
import { bootRequests, driveUpdateRequest, snapshotLoadRequest } from './requests.js';

/** Firecracker releases by what their snapshot API offers (checked against the shipped specs). */
export const SNAPSHOT_MIN: readonly [number, number] = [1, 5];
/** `network_overrides` on `PUT /snapshot/load` (a restored VM on another tap). */
export const NETWORK_OVERRIDES_MIN: readonly [number, number] = [1, 12];
/** `vsock_override` on `PUT /snapshot/load` (a restored VM's vsock socket somewhere else). */
export const VSOCK_OVERRIDE_MIN: readonly [number, number] = [1, 16];

export function atLeast(version: string, min: readonly [number, number]): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > min[0] || (a === min[0] && b >= min[1]);
}

/**
 * What Firecracker records in its vmstate and re-opens on load: the paths and the tap of the VM
 * that was saved. Kept in `snapshot.json` beside the meta (field `firecracker`), because a
 * restore elsewhere must override or re-point each of them.
 */
export interface FcLaunchRecord {
  tap: string;
  vsock: string;
  drives: { id: string; path: string }[];
}

type FcMeta = SnapshotMeta & { firecracker: FcLaunchRecord };

export interface FcSnapshotDeps {
  exec: Exec;
  binary: string;
  socketTimeoutMs?: number;
  /** Jailed VMs are not snapshotted (their paths live in per-VM chroots). */
  jailed: boolean;
  /** The instance id Firecracker runs under (`--id`). */
  instanceId(spec: LaunchSpec): string;
}

/**
 * Firecracker save/restore through its snapshot API (https://github.com/firecracker-microvm/firecracker/blob/main/docs/snapshotting/snapshot-support.md):
 * - save: `PATCH /vm Paused` → `PUT /snapshot/create` (vmstate → `state`, guest RAM → `memory`)
 *   → root disk copied (reflink, else sparse) while paused → `snapshot.json` last → `PATCH /vm
 *   Resumed` or the process killed (`then: 'exit'`). On failure the files made are removed and
 *   the guest resumed.
 * - restore: checks `snapshot.json` (Firecracker version, shape, file sizes, the state's sha256)
 *   and that every override the restore needs exists in this release, before starting anything;
 *   then a fresh process, logger and metrics, `PUT /snapshot/load` (RAM mapped privately from
 *   `memory`, `resume_vm: false`, `network_overrides` / `vsock_override` where the tap / socket
 *   differ), `PATCH /drives/<id>` for each disk whose path differs, `PATCH /vm Resumed`. Any
 *   failure kills the process and removes its sockets.
 * The fingerprint: the shape (vCPU, memory, kernel and initrd file, disk ids and modes); the
 * version is compared separately (a vmstate loads only into the release that wrote it).
 */
export class FirecrackerSnapshots implements VmSnapshots {
  private version?: Promise<string>;
  /** The binary's version once known (check() is synchronous). */
  private knownVersion?: string;

  constructor(private readonly d: FcSnapshotDeps) {}

  async fingerprint(spec: LaunchSpec): Promise<{ vmmVersion: string; fingerprint: string }> {
    const id = async (p?: string) => {
      if (!p) return null;
      const s = await stat(p).catch(() => undefined);
      return s ? { p, size: s.size, mtime: Math.floor(s.mtimeMs) } : { p };
    };
    const shape = {
      vcpu: spec.vcpu,
      memoryMiB: spec.memoryMiB,
      kernel: { format: spec.kernelFormat, file: await id(spec.kernel), initrd: await id(spec.initrd) },
      disks: spec.disks.map((x) => `${x.id}:${x.format}:${x.readOnly ? 'ro' : 'rw'}`),
      vsock: true,
      smt: false,
    };
    return { vmmVersion: await this.vmmVersion(), fingerprint: createHash('sha256').update(JSON.stringify(shape)).digest('hex') };
  }

  check(spec: LaunchSpec): string | undefined {
    if (this.d.jailed) return 'it runs under the jailer, whose per-VM chroot paths a snapshot cannot be restored into (not supported yet)';
    if (spec.mounts?.length) return 'it has a host folder (--mount)';
    if (this.knownVersion && !atLeast(this.knownVersion, SNAPSHOT_MIN))
      return `Firecracker v${this.knownVersion} is older than ${SNAPSHOT_MIN.join('.')}, the oldest release whose snapshot API banger drives`;
    return undefined;
  }

  async save(vm: VmHandle, spec: LaunchSpec, to: SnapshotFiles, o: SnapshotSaveOptions): Promise<SnapshotMeta> {
    await this.vmmVersion().catch(() => undefined);
    const why = this.check(spec);
    if (why) throw new BangerError(ErrorCode.Invalid, `vm '${vm.name}' cannot be snapshotted: ${why}`);
    const files = await jailedFiles(vm.files.dir);
    const api = new FirecrackerApi(files.api);
    const info = await api.instanceInfo({ signal: o.signal }).catch((e) => {
      throw new BangerError(ErrorCode.Vmm, `vm '${vm.name}' is not running (its Firecracker API does not answer: ${errorMessage(e)})`, { cause: e });
    });
    const vmmVersion = info.vmm_version;
    if (!atLeast(vmmVersion, SNAPSHOT_MIN))
      throw new BangerError(ErrorCode.Invalid, `vm '${vm.name}' runs Firecracker v${vmmVersion}; snapshots need ${SNAPSHOT_MIN.join('.')} or newer`);
    const { fingerprint } = await this.fingerprint(spec);
    const root = spec.disks.find((x) => x.id === 'root');
    await mkdir(to.dir, { recursive: true, mode: 0o700 });
    const made: string[] = [];
    let paused = false;
    try {
      await api.pause();
      paused = true;
      made.push(to.state, to.memory);
      await api.createSnapshot({ snapshot_path: to.state, mem_file_path: to.memory, snapshot_type: 'Full' });
      if (!o.keepDisk) {
        if (!root) throw new BangerError(ErrorCode.Internal, `vm '${vm.name}' has no root disk`);
        made.push(to.disk);
        await rawRootCopy(this.d.exec, root.path, to.disk, { signal: o.signal });
      }
      made.push(`${to.meta}.tmp`, to.meta);
      const meta = await writeMeta<FcMeta>(
        to,
        {
          vmm: 'firecracker',
          vmmVersion,
          fingerprint,
          vcpu: spec.vcpu,
          memoryMiB: spec.memoryMiB,
          sharedMemory: true, // RAM is always the separate mem file, mapped privately on load
          createdAt: new Date().toISOString(),
          firecracker: { tap: spec.net.tap, vsock: fcFiles(spec.files.dir).vsock, drives: spec.disks.map((x) => ({ id: x.id, path: x.path })) },
        },
        { memory: true, disk: !o.keepDisk },
      );
      if (o.then === 'exit') {
        await killFirecracker(files, 'SIGKILL');
        paused = false;
      } else {
        await api.resume();
        paused = false;
      }
      const { firecracker: _, ...plain } = meta;
      return plain;
    } catch (e) {
      for (const f of made) await rm(f, { force: true });
      if (paused) await api.resume().catch(() => undefined); // the guest runs again whatever happened
      throw e instanceof BangerError ? e : new BangerError(ErrorCode.Vmm, `saving vm '${vm.name}': ${errorMessage(e)}`, { cause: e });
    }
  }

  async restore(spec: LaunchSpec, from: SnapshotFiles, o: { signal?: AbortSignal } = {}): Promise<{ pid: number }> {
    const { load } = await this.plan(spec, from);
    const files = fcFiles(spec.files.dir);
    const undo = new UndoStack();
    try {
      await rm(files.vsock, { force: true }); // a stale socket of this VM's: Firecracker binds it anew
      undo.push('kill firecracker', () => killFirecracker(files, 'SIGKILL'));
      const { pid, api } = await spawnFirecracker(this.d.binary, this.d.instanceId(spec), files, spec.files.console, {
        socketTimeoutMs: this.d.socketTimeoutMs,
        signal: o.signal,
        cgroup: spec.cgroup?.procs,
      });
      const pre = bootRequests({
        vcpu: spec.vcpu,
        memoryMiB: spec.memoryMiB,
        kernel: spec.kernel,
        bootArgs: '',
        disks: [],
        logPath: files.log,
        metricsPath: files.metrics,
      });
      const steps: FcRequest[] = [...pre.filter((r) => r.step === 'logger' || r.step === 'metrics'), load.request, ...load.drives];
      for (const r of steps) await api.call(r, { signal: o.signal, timeoutMs: r.step === 'snapshot-load' ? 120_000 : undefined });
      await api.resume();
      undo.commit();
      return { pid };
    } catch (e) {
      await undo.unwind();
      if (e instanceof BangerError && e.code !== ErrorCode.Vmm) throw e;
      throw new BangerError(ErrorCode.Conflict, `the saved state in ${from.dir} did not load: ${errorMessage(e)}`, {
        cause: e,
        hint: `see ${files.log}`,
        details: { snapshot: from.dir, step: e instanceof BangerError ? e.details?.step : undefined },
      });
    }
  }

  /**
   * Everything a restore needs, checked before any process starts: the meta against `spec` and
   * this binary, the files, and the overrides this release can do (E_CONFLICT naming what differs).
   */
  async plan(spec: LaunchSpec, from: SnapshotFiles): Promise<{ meta: FcMeta; load: { request: FcRequest; drives: FcRequest[] } }> {
    const bad = (why: string, hint?: string) => snapshotConflict(from, why, hint);
    const why = this.check(spec);
    if (why) throw bad(why);
    const now = await this.fingerprint(spec);
    if (!atLeast(now.vmmVersion, SNAPSHOT_MIN)) throw bad(`this host's Firecracker is v${now.vmmVersion}; snapshots need ${SNAPSHOT_MIN.join('.')} or newer`);
    const meta = await verifiedMeta({
      from,
      spec,
      kind: 'firecracker',
      now,
      parse: parseFcMeta,
      versionHint: 'a vmstate loads only into the release that wrote it: make the snapshot again',
      versionName: (v) => `Firecracker v${v}`,
      machine: 'kernel, initrd or disks',
    });
    const size = fileSize;
    const rec = meta.firecracker;
    const vsock = fcFiles(spec.files.dir).vsock;
    const tapDiffers = rec.tap !== spec.net.tap;
    const vsockDiffers = rec.vsock !== vsock;
    if (tapDiffers && !atLeast(now.vmmVersion, NETWORK_OVERRIDES_MIN))
      throw bad(
        `it was saved on tap ${rec.tap} and Firecracker v${now.vmmVersion} cannot move it to ${spec.net.tap} (network_overrides arrived in ${NETWORK_OVERRIDES_MIN.join('.')})`,
        'restore it into the VM it came from, or install Firecracker 1.12 or newer',
      );
    if (vsockDiffers && !atLeast(now.vmmVersion, VSOCK_OVERRIDE_MIN))
      throw bad(
        `its vsock socket was ${rec.vsock} and Firecracker v${now.vmmVersion} cannot move it to ${vsock} (vsock_override arrived in ${VSOCK_OVERRIDE_MIN.join('.')})`,
        'restore it into the VM it came from, or install Firecracker 1.16 or newer',
      );
    const drives: FcRequest[] = [];
    for (const d of spec.disks) {
      const saved = rec.drives.find((x) => x.id === d.id);
      if (!saved) throw bad(`it has no drive ${d.id}`);
      if (saved.path === d.path) continue;
      // Firecracker re-opens the saved path on load (before it can be re-pointed): it must exist.
      if ((await size(saved.path)) === undefined)
        throw bad(
          `Firecracker re-opens drive ${d.id} at its saved path ${saved.path}, which is gone`,
          'restore it while the VM it came from still has its disks',
        );
      drives.push(driveUpdateRequest(d.id, d.path));
    }
    const request = snapshotLoadRequest({
      snapshot_path: from.state,
      mem_backend: { backend_type: 'File', backend_path: from.memory },
      resume_vm: false,
      network_overrides: tapDiffers ? [{ iface_id: 'eth0', host_dev_name: spec.net.tap }] : undefined,
      vsock_override: vsockDiffers ? { uds_path: vsock } : undefined,
    });
    return { meta, load: { request, drives } };
  }

  private vmmVersion(): Promise<string> {
    this.version ??= firecrackerVersion(this.d.binary, this.d.exec).then((v) => (this.knownVersion = v));
    this.version.catch(() => (this.version = undefined));
    return this.version;
  }
}

/** A Firecracker `snapshot.json` read back: every field checked (a file on disk, not trusted blindly). */
export function parseFcMeta(v: unknown): FcMeta {
  const base = parseMeta(v);
  const o = v as Record<string, unknown>;
  const str = metaString;
  if (base.vmm !== 'firecracker') throw new Error(`it was made by ${base.vmm}, not firecracker`);
  const f = (o.firecracker ?? {}) as Record<string, unknown>;
  if (!Array.isArray(f.drives) || f.drives.length > 16) throw new Error('firecracker.drives is not a list');
  return {
    ...base,
    vmm: 'firecracker',
    firecracker: {
      tap: str(f.tap, 'firecracker.tap'),
      vsock: str(f.vsock, 'firecracker.vsock'),
      drives: (f.drives as unknown[]).map((d, i) => {
        const x = d as Record<string, unknown>;
        return { id: str(x?.id, `firecracker.drives[${i}].id`), path: str(x?.path, `firecracker.drives[${i}].path`) };
      }),
    },
  };
}

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, rename, stat, writeFile } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';
import { VMM_KINDS, type LaunchSpec, type SnapshotFiles, type SnapshotMeta, type VmmKind } from './types.js';

/** A `snapshot.json` read back: every field checked (it is a file on disk, not trusted blindly). */
export function parseMeta(v: unknown): SnapshotMeta {
  const o = v as Record<string, unknown>;
  const b = (o?.bytes ?? {}) as Record<string, unknown>;
  const num = (x: unknown, n: string) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new Error(`${n} is not a count`);
    return x;
  };
  const str = metaString;
  if (!(VMM_KINDS as readonly unknown[]).includes(o?.vmm)) throw new Error('vmm is unknown');
  return {
    vmm: o.vmm as VmmKind,
    vmmVersion: str(o.vmmVersion, 'vmmVersion'),
    fingerprint: str(o.fingerprint, 'fingerprint'),
    vcpu: num(o.vcpu, 'vcpu'),
    memoryMiB: num(o.memoryMiB, 'memoryMiB'),
    sharedMemory: o.sharedMemory === true,
    bytes: { state: num(b.state, 'bytes.state'), memory: num(b.memory, 'bytes.memory'), disk: num(b.disk, 'bytes.disk') },
    createdAt: str(o.createdAt, 'createdAt'),
    ...(o.stateSha256 === undefined ? {} : { stateSha256: str(o.stateSha256, 'stateSha256') }),
  };
}

/** A string field of a `snapshot.json` (bounded), or an error naming the field. */
export function metaString(x: unknown, n: string): string {
  if (typeof x !== 'string' || x.length > 4096) throw new Error(`${n} is not a string`);
  return x;
}

/** The E_CONFLICT of a state that cannot be restored, naming it and why. */
export function snapshotConflict(from: SnapshotFiles, why: string, hint?: string): BangerError {
  return new BangerError(ErrorCode.Conflict, `the saved state in ${from.dir} cannot be restored: ${why}`, { hint, details: { snapshot: from.dir } });
}

export async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * A state's meta read back and checked, for both VMMs' `restore`: present and well-formed
 * (`parse`), made by this VMM's version (`versionHint` says what to do otherwise), the shape
 * asked for, the same fingerprint (`machine` names what it covers), and its files whole (sizes,
 * and the state's sha256 when recorded). E_CONFLICT naming what differs; nothing is started.
 */
export async function verifiedMeta<M extends SnapshotMeta>(o: {
  from: SnapshotFiles;
  spec: LaunchSpec;
  kind: VmmKind;
  now: { vmmVersion: string; fingerprint: string };
  parse: (v: unknown) => M;
  versionHint: string;
  /** How a version reads in the message (Firecracker's is a bare number). */
  versionName?: (v: string) => string;
  machine: string;
}): Promise<M> {
  const { from, spec, now } = o;
  const bad = (why: string, hint?: string) => snapshotConflict(from, why, hint);
  const raw = await readFile(from.meta, 'utf8').catch(() => undefined);
  if (raw === undefined) throw bad('it has no snapshot.json (an incomplete save)');
  let meta: M;
  try {
    const json = JSON.parse(raw) as { vmm?: unknown };
    if (json?.vmm !== o.kind) throw bad(`it was made by ${String(json?.vmm)}, not ${o.kind}`);
    meta = o.parse(json);
  } catch (e) {
    if (e instanceof BangerError) throw e;
    throw bad(`snapshot.json is damaged (${errorMessage(e)})`);
  }
  const named = o.versionName ?? ((v: string) => v);
  if (meta.vmmVersion !== now.vmmVersion) throw bad(`it was made by ${named(meta.vmmVersion)}; this host runs ${named(now.vmmVersion)}`, o.versionHint);
  if (meta.vcpu !== spec.vcpu || meta.memoryMiB !== spec.memoryMiB)
    throw bad(`it has ${meta.vcpu} vCPU and ${meta.memoryMiB} MiB; asked for ${spec.vcpu} vCPU and ${spec.memoryMiB} MiB`);
  if (meta.fingerprint !== now.fingerprint) throw bad(`the machine differs (${o.machine})`);
  if ((await fileSize(from.state)) !== meta.bytes.state) throw bad('the state file is missing or its size is wrong');
  if (meta.bytes.memory > 0 || meta.sharedMemory) {
    if ((await fileSize(from.memory)) !== meta.bytes.memory) throw bad('the memory file is missing or its size is wrong');
  }
  if (meta.stateSha256 && (await sha256File(from.state)) !== meta.stateSha256) throw bad('the state file is damaged (sha256 differs)');
  return meta;
}

/** A file's size, or undefined when it is not there. */
export async function fileSize(p: string): Promise<number | undefined> {
  return (await stat(p).catch(() => undefined))?.size;
}

/** Writes `meta` last and atomically (a state without its snapshot.json is incomplete); the sizes are taken from the files. */
export async function writeMeta<M extends SnapshotMeta>(
  to: SnapshotFiles,
  meta: Omit<M, 'bytes' | 'stateSha256'>,
  has: { memory: boolean; disk: boolean },
): Promise<M> {
  const size = async (p: string, yes: boolean) => (yes ? (await stat(p)).size : 0);
  const full = {
    ...meta,
    bytes: { state: await size(to.state, true), memory: await size(to.memory, has.memory), disk: await size(to.disk, has.disk) },
    stateSha256: await sha256File(to.state),
  } as M;
  await writeFile(`${to.meta}.tmp`, JSON.stringify(full, null, 2) + '\n', { mode: 0o600 });
  await rename(`${to.meta}.tmp`, to.meta);
  return full;
}

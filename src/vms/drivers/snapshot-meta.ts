import { VMM_KINDS, type SnapshotMeta, type VmmKind } from './types.js';

/** A `snapshot.json` read back: every field checked (it is a file on disk, not trusted blindly). */
export function parseMeta(v: unknown): SnapshotMeta {
  const o = v as Record<string, unknown>;
  const b = (o?.bytes ?? {}) as Record<string, unknown>;
  const num = (x: unknown, n: string) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new Error(`${n} is not a count`);
    return x;
  };
  const str = (x: unknown, n: string) => {
    if (typeof x !== 'string' || x.length > 4096) throw new Error(`${n} is not a string`);
    return x;
  };
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

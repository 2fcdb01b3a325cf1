import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { WarmInfo } from '../core/shapes/image.js';
import type { NamedSnapshot } from '../core/shapes/vm.js';
import { specOf } from './boot.js';
import { snapshotFiles } from './files.js';
import { du } from './paused-info.js';
import { observe } from './queries.js';
import { planStart } from './start.js';
import type { VmRecord } from './store.js';
import type { OpContext, VmBase, VmView } from './vm-base.js';
import { readWarm, warmKey } from './warm-find.js';

export type { NamedSnapshot } from '../core/shapes/vm.js';

const TAG = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * `vm snapshot NAME [TAG]`: the running VM's memory, device state and root disk saved into
 * `files.snapshots/TAG` while its vCPUs are stopped; the VM runs on. The directory appears by
 * rename once complete. Refused (nothing written) for a VM the driver cannot save (a --mount).
 */
export async function snapshotVm(vb: VmBase, name: string, tag: string | undefined, op: OpContext = {}): Promise<NamedSnapshot> {
  const t = tag ?? `s${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-')}`;
  if (!TAG.test(t))
    throw new BangerError(ErrorCode.Invalid, `snapshot tag '${t}': letters, digits, '.', '_' and '-', at most 63`, { details: { field: 'tag' } });
  return vb.locks.run(name, async () => {
    const vm = vb.get(name);
    const dir = join(vb.files(name).snapshots, t);
    if ((await readWarm(dir, 'source.json')) !== undefined)
      throw new BangerError(ErrorCode.Exists, `vm '${name}' has a snapshot '${t}' already`, { hint: `remove it: banger vm snapshot rm ${name} ${t}` });
    await saveRunning(vb, vm, dir, op);
    return (await listSnapshots(vb, name)).find((s) => s.tag === t)!;
  });
}

/** Save a running VM (under its lock) into `dir` with its source.json; the VM runs on. */
export async function saveRunning(vb: VmBase, vm: VmRecord, dir: string, op: OpContext): Promise<void> {
  if (!(await observe(vb, vm)).running)
    throw new BangerError(ErrorCode.InUse, `vm '${vm.name}' is not running`, { hint: `start it: banger vm start ${vm.name}` });
  const driver = vb.driver(vm.vmm);
  const snaps = driver.features.snapshots ? driver.snapshots : undefined;
  if (!snaps) throw new BangerError(ErrorCode.Invalid, `vm '${vm.name}': the ${driver.kind} driver cannot save a VM's state`);
  const plan = await planStart(vb, vm);
  const spec = await specOf(vb, plan);
  const why = snaps.check(spec);
  if (why) throw new BangerError(ErrorCode.Invalid, `vm '${vm.name}' cannot be snapshotted: ${why}`);
  const tmp = `${dir}.tmp-${randomBytes(4).toString('hex')}`;
  const t0 = Date.now();
  op.progress?.({ stage: 'snapshot', message: `saving vm '${vm.name}' (it runs on)` });
  await mkdir(tmp, { recursive: true, mode: 0o700 });
  try {
    // biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
    await snaps.save(plan.handle, spec, snapshotFiles(tmp), { then: 'resume', signal: op.signal });
    const shape = { vmm: vm.vmm, kernel: vm.kernel, vcpu: vm.spec.vcpu, memoryMiB: vm.spec.memoryMiB };
    const info: WarmInfo & { vm: string } = {
      image: vm.image,
      shape: warmKey(shape),
      ...shape,
      baseDisk: vm.spec.baseDisk ?? null,
      createdAt: new Date().toISOString(),
      vm: vm.name,
    };
    await writeFile(join(tmp, 'source.json'), JSON.stringify(info, null, 2) + '\n', { mode: 0o600 });
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  op.progress?.({ stage: 'snapshot', done: true, message: `saved in ${Date.now() - t0} ms`, elapsedMs: Date.now() - t0 });
}

/** `vm snapshot ls NAME`. */
export async function listSnapshots(vb: VmBase, name: string): Promise<NamedSnapshot[]> {
  vb.get(name);
  const root = vb.files(name).snapshots;
  const out: NamedSnapshot[] = [];
  for (const tag of await readdir(root).catch(() => [] as string[])) {
    if (tag.includes('.tmp-') || tag.startsWith('.')) continue;
    const w = await readWarm(join(root, tag), 'source.json');
    if (w) out.push({ ...w.info, dir: w.files.dir, bytes: { ...w.meta.bytes, allocated: await du(w.files.dir) }, vm: name, tag });
  }
  return out;
}

/** `vm snapshot rm NAME TAG`. */
export async function removeSnapshot(vb: VmBase, name: string, tag: string): Promise<{ removed: string[] }> {
  if (!TAG.test(tag)) throw new BangerError(ErrorCode.Invalid, `snapshot tag '${tag}' is not a tag`, { details: { field: 'tag' } });
  return vb.locks.run(name, async () => {
    const dir = join(vb.files(name).snapshots, tag);
    if (!(await readWarm(dir, 'source.json')))
      throw new BangerError(ErrorCode.NotFound, `vm '${name}' has no snapshot '${tag}'`, { hint: `see: banger vm snapshot ls ${name}` });
    await rm(dir, { recursive: true, force: true });
    return { removed: [`${name}@${tag}`] };
  });
}

/** The saved state `NAME[@TAG]` names (TAG: the newest when left out), for `vm create --from`. */
export async function resolveFrom(vb: VmBase, ref: string): Promise<NamedSnapshot> {
  const [name, tag] = ref.split('@') as [string, string | undefined];
  vb.get(name);
  let s: NamedSnapshot | undefined;
  if (tag === undefined) s = (await listSnapshots(vb, name)).sort((a, b) => a.createdAt.localeCompare(b.createdAt)).at(-1);
  else {
    const w = await readWarm(join(vb.files(name).snapshots, tag), 'source.json');
    if (w) s = { ...w.info, dir: w.files.dir, bytes: { ...w.meta.bytes, allocated: 0 }, vm: name, tag };
  }
  if (!s) throw new BangerError(ErrorCode.NotFound, `vm '${name}' has no snapshot${tag ? ` '${tag}'` : ''}`, { hint: `take one: banger vm snapshot ${name}` });
  return s;
}

/**
 * `vm fork NAME NEW [--count N]`: NAME is saved while it runs on (a hidden snapshot), and N new
 * VMs (NEW, or NEW-1 … NEW-N) are created from that state side by side, each with its own disk
 * copy, network and identity; the hidden snapshot is removed afterwards. Every create that
 * failed unwound itself; the first failure is reported after all settled.
 */
export async function forkVm(
  vb: VmBase,
  name: string,
  newName: string,
  count: number,
  create: (p: { from: string; name: string; nat: boolean }) => Promise<VmView>,
  op: OpContext = {},
): Promise<VmView[]> {
  const src = vb.get(name);
  const names = count === 1 ? [newName] : Array.from({ length: count }, (_, i) => `${newName}-${i + 1}`);
  for (const n of names) if (vb.repo.find(n)) throw new BangerError(ErrorCode.Exists, `vm '${n}' already exists`, { hint: 'pick another name for the fork' });
  const tag = `.fork-${randomBytes(4).toString('hex')}`;
  const dir = join(vb.files(name).snapshots, tag);
  await vb.locks.run(name, () => saveRunning(vb, vb.get(name), dir, op));
  try {
    const r = await Promise.allSettled(names.map((n) => create({ from: `${name}@${tag}`, name: n, nat: src.spec.nat })));
    const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed) throw failed.reason;
    return r.map((x) => (x as PromiseFulfilledResult<VmView>).value);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

import { toolEnv } from '../core/exec.js';
import { errorMessage } from '../core/errors.js';
import { specOf } from './boot.js';
import type { SnapshotFiles } from './drivers/types.js';
import type { BootPlan } from './plan.js';
import type { Stage } from './readiness.js';
import type { VmBase } from './vm-base.js';
import { readWarm, warmKey } from './warm-find.js';

/**
 * The warm snapshot a create restores instead of booting: the image's, for this VMM, kernel,
 * vCPU count and memory size, made from the same prepared disk, by the same VMM version and
 * machine shape (the driver's fingerprint). When there is none, the create cold-boots and a
 * stage line (`warm`) says why. Called after the record step (the fingerprint needs the plan's
 * network, though it does not depend on it).
 */
export async function pickWarm(vb: VmBase, plan: BootPlan, stage: Stage): Promise<SnapshotFiles | undefined> {
  const cold = (why: string): undefined => {
    stage('warm', `cold boot: ${why}`, true);
    return undefined;
  };
  const snaps = plan.driver.features.snapshots ? plan.driver.snapshots : undefined;
  if (!snaps) return cold(`the ${plan.driver.kind} driver cannot restore a snapshot`);
  if (plan.spec.mounts?.length) return cold('a VM with a host folder (--mount) cannot be restored');
  if (plan.spec.diskSizeBytes !== undefined) return cold('--disk-size asks for another root disk than the snapshot has');
  if (plan.spec.workDiskBytes !== undefined) return cold('--work-disk adds a disk the snapshot does not have');
  const image = plan.image!.name;
  const shape = { vmm: plan.choice.kind, kernel: plan.kernel.name, vcpu: plan.spec.vcpu, memoryMiB: plan.spec.memoryMiB };
  const w = await readWarm(vb.ctx.layout.warmSnapshot(image, warmKey(shape)));
  if (!w) return cold(`no warm snapshot of ${image} for ${shape.vcpu} vCPU, ${shape.memoryMiB} MiB, kernel ${shape.kernel} (banger image warm ${image})`);
  if ((w.info.baseDisk ?? null) !== (plan.spec.baseDisk ?? null)) return cold(`the warm snapshot of ${image} is of an older prepared disk`);
  try {
    const fp = await snaps.fingerprint(await specOf(vb, plan));
    if (fp.vmmVersion !== w.meta.vmmVersion) return cold(`the warm snapshot was made by ${w.meta.vmmVersion}, this host runs ${fp.vmmVersion}`);
    if (fp.fingerprint !== w.meta.fingerprint) return cold('the warm snapshot was made for another machine (kernel, initrd or disks)');
  } catch (e) {
    return cold(`the warm snapshot cannot be checked (${errorMessage(e)})`);
  }
  return w.files;
}

/** step disk of a warm create: the root disk is a private copy of the snapshot's (sparse, reflink when possible). */
export async function warmDisk(vb: VmBase, plan: BootPlan, from: SnapshotFiles, signal?: AbortSignal): Promise<void> {
  const root = { id: 'root' as const, ...plan.driver.rootDisk(plan.handle) };
  await vb.ctx.exec(['cp', '--sparse=always', '--reflink=auto', from.disk, root.path], { env: toolEnv(), signal, timeoutMs: 600_000 });
  plan.rootDisk = root;
}

import { toolEnv } from '../core/exec.js';
import { view } from './queries.js';
import { sshOptions } from './ssh.js';
import type { VmRecord } from './store.js';
import { markStopped } from './teardown.js';
import type { OpContext, VmBase, VmView } from './vm-base.js';

/**
 * `vm stop`: ask each guest to shut down (the driver forces it after the stop timeout). Each
 * view carries `forced`: whether the VMM had to be killed because the guest did not go in time.
 */
export async function stopVms(vb: VmBase, names: string[], op: OpContext = {}): Promise<Array<VmView & { forced: boolean }>> {
  return vb.eachLocked(names, async (name): Promise<VmView & { forced: boolean }> => {
    op.progress?.({ stage: 'stop', key: name, message: 'asking the guest to shut down' });
    const { forced } = await stopVm(vb, vb.get(name), false);
    op.progress?.({ stage: 'stop', key: name, done: true, ...(forced ? { message: 'forced: the guest did not shut down in time' } : {}) });
    return { ...(await view(vb, vb.get(name))), forced };
  });
}

/** `vm kill`: send a signal to the VMM. SIGKILL/SIGTERM also tear the VM's network down. */
export async function killVms(vb: VmBase, names: string[], signal: NodeJS.Signals = 'SIGKILL'): Promise<VmView[]> {
  return vb.eachLocked(names, async (name) => {
    const vm = vb.get(name);
    const driver = vb.driver(vm.vmm);
    await driver.kill(vb.handle(vm), signal);
    if (!(await driver.status(vb.handle(vm), vm.pid)).running) await markStopped(vb, vm);
    return view(vb, vb.get(name));
  });
}

/**
 * Graceful stop (or SIGKILL when `force`), then tear down tap and NAT. Idempotent. `forced`: the
 * VMM was killed (asked to by `force`, or the guest did not shut down within the stop timeout).
 */
export async function stopVm(vb: VmBase, vm: VmRecord, force: boolean): Promise<{ forced: boolean }> {
  const driver = vb.driver(vm.vmm);
  const handle = vb.handle(vm);
  let forced = force;
  if (force) await driver.kill(handle, 'SIGKILL');
  else {
    ({ forced } = await driver.stop(handle, {
      timeoutMs: vb.ctx.config.vm.stopTimeoutSeconds * 1000,
      guestShutdown: vm.ip ? () => guestReboot(vb, vm.ip!) : undefined,
    }));
  }
  await markStopped(vb, vm);
  return { forced };
}

/** microvm runs with acpi=off: a guest reboot (reboot=t, -no-reboot) is the clean exit. */
async function guestReboot(vb: VmBase, ip: string): Promise<void> {
  await vb.ctx.exec(['ssh', ...sshOptions(vb.ssh), '-o', 'ConnectTimeout=3', `root@${ip}`, 'sync; systemctl reboot || reboot'], {
    env: toolEnv(),
    allowFailure: true,
    timeoutMs: 15000,
  });
}

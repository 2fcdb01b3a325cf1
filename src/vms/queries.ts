import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { exists } from '../core/fsutil.js';
import { agentRequest } from './agent.js';
import { FIRST_BOOT } from './cmdline.js';
import { readFrom } from './console.js';
import { pausedInfo } from './paused-info.js';
import type { SshInfo, VmCgroupUsage, VmLogs } from '../core/shapes/vm.js';
import { vmCgroupUsage } from './limits.js';
import type { VmFiles } from './files.js';
import { sshCommonOptions } from './ssh.js';
import type { VmRecord } from './store.js';
import { markStopped } from './teardown.js';
import type { VmBase, VmView } from './vm-base.js';

/** Check the host for a VM marked running; a dead one is marked stopped (and its network removed). */
export async function observe(vb: VmBase, vm: VmRecord): Promise<{ running: boolean; pid?: number }> {
  const st = await vb.driver(vm.vmm).status(vb.handle(vm), vm.pid);
  if (!st.running && (vm.state === 'running' || vm.state === 'starting') && !vb.busy.has(vm.name)) {
    await markStopped(vb, vm).catch((e) => vb.ctx.log.warn('mark stopped failed', { vm: vm.name, error: errorMessage(e) }));
  }
  return st;
}

/** The record plus what the host shows; `current`: `vm` was just read (no second read). */
export async function view(vb: VmBase, vm: VmRecord, current = false): Promise<VmView> {
  const driver = vb.driver(vm.vmm);
  const st = await driver.status(vb.handle(vm), vm.pid);
  const fresh = current ? vm : (vb.repo.find(vm.name) ?? vm);
  const files = vb.files(vm.name);
  return {
    ...fresh,
    state: st.running ? 'running' : fresh.state === 'running' ? 'stopped' : fresh.state,
    pid: st.running ? (st.pid ?? fresh.pid) : null,
    running: st.running,
    dir: files.dir,
    console: driver.consolePath(vb.handle(vm)),
    sshCommand: fresh.ip ? `banger vm ssh ${vm.name}` : undefined,
    ...(fresh.state === 'paused' && !st.running ? { paused: await pausedInfo(files.paused) } : {}),
  };
}

export async function list(vb: VmBase): Promise<VmView[]> {
  const out: VmView[] = [];
  for (const vm of vb.repo.list()) {
    await observe(vb, vm);
    out.push(await view(vb, vb.repo.find(vm.name) ?? vm));
  }
  return out;
}

export async function show(
  vb: VmBase,
  name: string,
): Promise<VmView & { files: VmFiles; cmdlineFirstBoot: string | null; rootDiskMethod?: string; cgroup?: VmCgroupUsage }> {
  const vm = vb.get(name);
  await observe(vb, vm);
  const rootDiskMethod = await vb.driver(vm.vmm).rootDiskMethod?.(vb.handle(vm));
  // The VMM's cgroup as the kernel reports it (limits read back, memory and CPU used): running VMs only.
  const cgroup = (await observe(vb, vm)).running ? await vmCgroupUsage({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, vm) : undefined;
  return {
    ...(await view(vb, vb.get(name))),
    files: vb.files(name),
    cmdlineFirstBoot: vm.spec.firstBoot ? FIRST_BOOT : null,
    rootDiskMethod,
    ...(cgroup ? { cgroup } : {}),
  };
}

export async function logs(vb: VmBase, name: string, offset = 0): Promise<VmLogs> {
  const vm = vb.get(name);
  const driver = vb.driver(vm.vmm);
  const r = await readFrom(driver.consolePath(vb.handle(vm)), offset);
  return { data: r.data, offset: r.offset, end: r.end, running: (await driver.status(vb.handle(vm), vm.pid)).running };
}

/** The VM, which must be running (E_IN_USE naming `vm start` otherwise). */
async function running(vb: VmBase, name: string): Promise<VmRecord> {
  const vm = vb.get(name);
  if (!(await observe(vb, vm)).running) throw new BangerError(ErrorCode.InUse, `vm '${name}' is not running`, { hint: `start it: banger vm start ${name}` });
  return vm;
}

/** What the CLI needs to run OpenSSH itself (stdio inherited, remote exit code). */
export async function sshInfo(vb: VmBase, name: string, resumedMs?: number): Promise<SshInfo> {
  const vm = await running(vb, name);
  if (!vm.ip) throw new BangerError(ErrorCode.Internal, `vm '${name}' has no IP lease`);
  return {
    name,
    ip: vm.ip,
    user: 'root',
    identityFile: vb.ssh.key,
    groupIdentityFile: (await exists(vb.ssh.groupKey)) ? vb.ssh.groupKey : undefined,
    knownHostsFile: vb.ssh.knownHosts,
    options: sshCommonOptions(vb.ssh),
    ...(resumedMs === undefined ? {} : { resumedMs }),
  };
}

export async function ports(vb: VmBase, name: string): Promise<{ name: string; ports: unknown[]; agent: boolean }> {
  const vm = await running(vb, name);
  const r = await agentRequest(vb.driver(vm.vmm), vb.handle(vm), 'ports', 5000);
  if (!r)
    throw new BangerError(ErrorCode.Timeout, `vm '${name}': the guest agent did not answer`, {
      hint: 'images without banger-vsock-agent cannot list ports; check it with: banger vm ssh NAME -- systemctl status banger-vsock-agent',
    });
  return { name, ports: Array.isArray(r.ports) ? r.ports : [], agent: true };
}

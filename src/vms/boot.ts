import { applyPolicy, hasPolicy, removePolicy } from './egress.js';
import { throwIfAborted } from '../core/errors.js';
import type { StepRunner } from '../core/steps.js';
import { settleAll } from './args.js';
import { tscKhzFromCpuinfo } from './cmdline.js';
import { removeConsole } from './console-log.js';
import type { LaunchCgroup, LaunchSpec } from './drivers/types.js';
import { launchSpec } from './launch.js';
import { cgroupStep } from './limits.js';
import { planNet, type BootPlan } from './plan.js';
import { waitReady } from './readiness.js';
import { testPause } from './testpause.js';
import type { VmBase } from './vm-base.js';

export interface LaunchOptions {
  steps: StepRunner;
  wait: boolean;
  /** The network step ran already (create runs it beside disk and seed). */
  networkReady?: boolean;
}

/**
 * Boot a planned VM (create and start): network (unless create already made it) → vmm →
 * boot → ssh → agent. Each side effect registers its undo on the runner's stack.
 */
export async function launch(vb: VmBase, plan: BootPlan, o: LaunchOptions): Promise<void> {
  vb.busy.add(plan.name);
  try {
    await launchInner(vb, plan, o);
  } finally {
    vb.busy.delete(plan.name);
  }
}

async function launchInner(vb: VmBase, plan: BootPlan, o: LaunchOptions): Promise<void> {
  const { steps } = o;
  const { driver, handle } = plan;
  const net = planNet(plan);
  if (!o.networkReady) await networkUp(vb, plan, steps, false);
  throwIfAborted(steps.signal);

  // step ports (a create opened them already: open is idempotent)
  steps.undo('ports', () => vb.forwards.close(plan.name));
  await vb.forwards.open(plan.name, plan.spec.ports ?? [], () => vb.repo.find(plan.name)?.ip ?? undefined, plan.spec.portLimits);
  // step cgroup: the VMM's group with its limits (limits.ts), before anything runs in it
  const cgroup = await cgroupStep({ cgroups: () => vb.cgroups(), instance: vb.net.instance }, { id: plan.id, name: plan.name, spec: plan.spec }, driver, steps);
  // step mounts: what the driver's shared folders need on the host, before the VMM (QEMU:
  // virtiofsd, whose socket it connects to; it exits with QEMU), inside the VMM's group
  const mounts = plan.spec.mounts ?? [];
  if (mounts.length && driver.folders) {
    const folders = driver.folders;
    steps.undo('mounts', () => folders.stop(handle, mounts));
    await folders.start(handle, mounts, { cgroup: cgroup?.procs });
  }
  const { pid } = await steps.run(
    'vmm',
    async () => {
      const spec = await specOf(vb, plan, cgroup);
      await removeConsole(driver.consolePath(handle)); // with its rotation: offsets start at 0
      vb.repo.setState(plan.name, { state: 'starting', desiredState: 'running' });
      throwIfAborted(steps.signal);
      // Registered before the start: a start cut short (cancel, timeout) may have left a VMM
      // behind; kill finds it by its pid file and control socket, and is a no-op when there is none.
      steps.undo('vmm', () => driver.kill(handle, 'SIGKILL'));
      const r = await driver.launch(spec, { signal: steps.signal });
      vb.repo.setState(plan.name, { state: 'running', pid: r.pid, startedAt: new Date().toISOString() });
      return r;
    },
    { message: `${driver.kind} starting`, done: (r) => `pid ${r.pid}` },
  );
  await testPause(vb.ctx, 'vmm', steps.signal);
  if (!o.wait) return;

  // steps boot, ssh, agent (waitReady reports each; its errors carry their own step)
  await steps.run(
    'ready',
    () =>
      waitReady({
        exec: vb.ctx.exec,
        ssh: vb.ssh,
        ip: net.ip,
        vm: handle,
        driver,
        pid,
        timeoutMs: vb.ctx.config.vm.sshTimeoutSeconds * 1000,
        firstBootTimeoutMs: vb.ctx.config.vm.firstBootTimeoutSeconds * 1000,
        signal: steps.signal,
        stage: steps.stage,
      }),
    { silent: true },
  );
}

/** What the driver launches for a plan (launch, and the save/restore of pause, snapshots and warm starts). */
export async function specOf(vb: VmBase, plan: BootPlan, cgroup?: LaunchCgroup): Promise<LaunchSpec> {
  const net = planNet(plan);
  const spec = launchSpec({
    instance: vb.net.instance,
    vm: { id: plan.id, name: plan.name, spec: plan.spec, ip: net.ip },
    kernel: plan.kernel,
    driver: plan.driver,
    files: plan.files,
    net,
    subnet: vb.net.subnet(),
    kvm: plan.choice.kvm,
    tscKhz: plan.choice.kvm ? undefined : tscKhzFromCpuinfo(await vb.host.readFile('/proc/cpuinfo')),
    rootDisk: plan.rootDisk,
    lean: vb.ctx.config.vm.leanBoot,
    cgroup,
  });
  return plan.spec.memoryFile ? { ...spec, memoryFile: plan.spec.memoryFile } : spec;
}

/**
 * step network: bridge, the VM's tap on it, NAT. `fresh` (a VM created this moment, whose
 * tap name comes from a new id) skips removing a stale tap. Undo is registered before each
 * action (teardown is idempotent), so a half-made tap is removed too.
 */
export function networkUp(vb: VmBase, plan: BootPlan, steps: StepRunner, fresh: boolean): Promise<void> {
  const net = planNet(plan);
  return steps.run(
    'network',
    async () => {
      const tap = async () => {
        await settleAll([vb.net.ensureBridge(), fresh ? undefined : vb.net.removeTap(net.tap)]); // a stale tap from a crash
        steps.undo('tap', () => vb.net.removeTap(net.tap));
        await vb.net.createTap(net, plan.name);
      };
      const nat = async () => {
        steps.undo('nat', () => vb.net.disableNat(plan.id));
        await vb.net.enableNat(plan.id, net.ip);
      };
      // The policy goes in before the tap exists (its jump matches the tap's name), so the
      // guest never sends a frame unfiltered.
      const policy = async () => {
        steps.undo('policy', () => removePolicy(vb, plan));
        await applyPolicy(vb, { id: plan.id, name: plan.name, tap: net.tap, mac: net.mac, spec: plan.spec });
      };
      if (hasPolicy(plan.spec)) await policy();
      await settleAll([tap(), plan.spec.nat ? nat() : undefined]);
    },
    {
      message: `${net.ip}/${net.prefix} on ${net.bridge} via ${net.tap}${plan.spec.nat ? ', NAT' : ''}${hasPolicy(plan.spec) ? `, egress ${plan.spec.egress}` : ''}`,
    },
  );
}

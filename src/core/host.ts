import { access, constants, readFile } from 'node:fs/promises';
import { which } from './exec.js';

/**
 * The host boundary that preflight checks and VMM selection read (binaries on PATH, files
 * such as /proc/cpuinfo, device permissions). Tests substitute a fake; `realHost` reads this
 * machine. Lives in core so domains (vms) and the doctor share one probe.
 */
export interface HostProbe {
  which(cmd: string): Promise<string | undefined>;
  /** File contents, undefined when unreadable (never throws). */
  readFile(path: string): Promise<string | undefined>;
  canReadWrite(path: string): Promise<boolean>;
  /** The Node.js running banger (default: this process's). */
  runtime?(): NodeRuntime;
}

export interface NodeRuntime {
  path: string;
  /** `process.version`, e.g. "v24.22.3". */
  version: string;
  /** `process.release.lts`: the LTS line's name, undefined for a non-LTS release. */
  lts?: string;
}

export const realHost: HostProbe = {
  which,
  readFile: (p) => readFile(p, 'utf8').catch(() => undefined),
  canReadWrite: (p) =>
    access(p, constants.R_OK | constants.W_OK).then(
      () => true,
      () => false,
    ),
};

/** KVM is usable when /dev/kvm is read-write and the CPU advertises vmx or svm. Never throws. */
export async function kvmUsable(host: HostProbe): Promise<{ usable: boolean; reason: string }> {
  if (!(await host.canReadWrite('/dev/kvm'))) return { usable: false, reason: '/dev/kvm is missing or not read-write' };
  const cpu = (await host.readFile('/proc/cpuinfo')) ?? '';
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpu))
    return { usable: false, reason: '/dev/kvm exists but the CPU flags show no vmx/svm (nested or paravirtual KVM)' };
  return { usable: true, reason: '/dev/kvm read-write and vmx/svm present' };
}

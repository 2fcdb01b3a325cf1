import { BangerError, ErrorCode, errorMessage } from './errors.js';
import { exec as realExec, toolEnv, type Exec } from './exec.js';

/** The oldest Firecracker banger drives (API fields and vsock behaviour it relies on). */
export const MIN_FIRECRACKER: readonly [number, number] = [1, 5];

/** `firecracker --version` → "1.16.1" (its first line reads `Firecracker v1.16.1`). E_VMM when it does not run or answer so. */
export async function firecrackerVersion(binary: string, exec: Exec = realExec): Promise<string> {
  let out: string;
  try {
    out = (await exec([binary, '--version'], { env: toolEnv(), timeoutMs: 10_000 })).stdout;
  } catch (e) {
    throw new BangerError(ErrorCode.Vmm, `'${binary} --version' failed: ${errorMessage(e)}`, { cause: e });
  }
  const m = /Firecracker v?(\d+)\.(\d+)\.(\d+)\S*/i.exec(out);
  if (!m) throw new BangerError(ErrorCode.Vmm, `'${binary} --version' did not print a Firecracker version: ${JSON.stringify(out.slice(0, 80))}`);
  return `${m[1]}.${m[2]}.${m[3]}`;
}

export function versionSupported(v: string): boolean {
  const [a = 0, b = 0] = v.split('.').map(Number);
  return a > MIN_FIRECRACKER[0] || (a === MIN_FIRECRACKER[0] && b >= MIN_FIRECRACKER[1]);
}

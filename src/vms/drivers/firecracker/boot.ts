import { rm } from 'node:fs/promises';
import { BangerError, ErrorCode, errorMessage, isBangerError } from '../../../core/errors.js';
import { UndoStack } from '../../../core/undo.js';
import type { FcFiles } from './files.js';
import { killFirecracker, spawnFirecracker } from './process.js';
import { bootRequests, type FcBootConfig } from './requests.js';

export interface FcBootOptions {
  binary: string;
  id: string;
  files: FcFiles;
  consolePath: string;
  config: FcBootConfig;
  signal?: AbortSignal;
  socketTimeoutMs?: number;
  /** Per-step progress/log hook: called before each step with its name. */
  onStep?: (step: string) => void;
}

/**
 * Boots one Firecracker VM as named steps: `vmm-start` (spawn + wait for the API), then
 * logger, metrics, machine-config, boot-source, drive-<id>…, network-interface, vsock,
 * instance-start (requests.ts). Each side effect registers its undo when it happens; a
 * failure at any step kills the process and unwinds newest first, and only then throws:
 * E_VMM whose message carries Firecracker's `fault_message` and `details.step` the failed
 * step. Resolves with the pid of a running instance.
 */
export async function bootFirecracker(o: FcBootOptions): Promise<{ pid: number }> {
  const undo = new UndoStack();
  let step = 'vmm-start';
  try {
    o.onStep?.(step);
    const { pid, api } = await spawnFirecracker(o.binary, o.id, o.files, o.consolePath, { socketTimeoutMs: o.socketTimeoutMs, signal: o.signal });
    undo.push('kill firecracker', () => killFirecracker(o.files, 'SIGKILL'));
    for (const req of bootRequests(o.config)) {
      step = req.step;
      if (o.signal?.aborted) throw new BangerError(ErrorCode.Cancelled, `firecracker boot cancelled before step ${step}`, { details: { step } });
      o.onStep?.(step);
      if (req.step === 'vsock') undo.push('remove vsock socket', () => rm(o.files.vsock, { force: true }));
      await api.call(req, { signal: o.signal });
    }
    undo.commit();
    return { pid };
  } catch (e) {
    await undo.unwind();
    if (isBangerError(e) && e.details?.step) throw e;
    throw new BangerError(isBangerError(e) ? e.code : ErrorCode.Vmm, `firecracker step ${step}: ${errorMessage(e)}`, { cause: e, details: { ...(isBangerError(e) ? e.details : {}), step } });
  }
}

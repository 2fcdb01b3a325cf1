import { rm } from 'node:fs/promises';
import { StepRunner } from '../../../core/steps.js';
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
  /** Replaces the process's arguments (jailer mode: `binary` is the jailer, these its argv; the jailer writes the pid file). */
  argv?: string[];
  /** cgroup.procs files the process enters before it runs (vms/limits.ts; not with the jailer, which makes its own). */
  cgroup?: string[];
  /** Per-step progress hook: called as each step starts with its name. */
  onStep?: (step: string) => void;
}

/**
 * Boots one Firecracker VM as named steps (core/steps.ts StepRunner): `vmm-start` (spawn + wait
 * for the API), then logger, metrics, machine-config, boot-source, drive-<id>…,
 * network-interface, vsock, instance-start (requests.ts). Each side effect registers its undo
 * when it happens; a failure at any step kills the process and unwinds newest first, and only
 * then throws: E_VMM whose message carries Firecracker's `fault_message`, with `details.step`
 * the failed step. Resolves with the pid of a running instance.
 */
export async function bootFirecracker(o: FcBootOptions): Promise<{ pid: number }> {
  const undo = new UndoStack();
  const steps = new StepRunner({ undo, signal: o.signal, stage: (name, _m, done) => (done ? undefined : o.onStep?.(name)) });
  try {
    const { pid, api } = await steps.run('vmm-start', async () => {
      // Registered before the spawn: spawnFirecracker cleans up after itself, this covers later steps.
      undo.push('kill firecracker', () => killFirecracker(o.files, 'SIGKILL'));
      return spawnFirecracker(o.binary, o.id, o.files, o.consolePath, {
        socketTimeoutMs: o.socketTimeoutMs,
        signal: o.signal,
        argv: o.argv,
        jailerWritesPid: o.argv !== undefined,
        cgroup: o.cgroup,
      });
    });
    for (const req of bootRequests(o.config)) {
      await steps.run(req.step, async () => {
        if (req.step === 'vsock') undo.push('remove vsock socket', () => rm(o.files.vsock, { force: true }));
        await api.call(req, { signal: o.signal });
      });
    }
    undo.commit();
    return { pid };
  } catch (e) {
    await undo.unwind();
    throw e;
  }
}

import { throwIfAborted } from '../core/errors.js';
import type { Context } from '../core/context.js';

/**
 * TEST-ONLY hook. When the daemon's environment has `BANGER_TEST_PAUSE_AT=<step>` and a
 * `vm create` reaches that step, the create logs `test pause` (with the step) and waits
 * there until it is cancelled (or the daemon is killed), so a test can SIGKILL bangerd at a
 * precise point. Steps: `record` (row and lease written), `network` (disk, seed, tap and NAT
 * made; no VMM yet), `vmm` (the VMM is running; before the boot wait). Unset, or any other
 * value, does nothing: production never sets it.
 */
export async function testPause(ctx: Context, step: 'record' | 'network' | 'vmm', signal?: AbortSignal): Promise<void> {
  if (process.env.BANGER_TEST_PAUSE_AT !== step) return;
  ctx.log.warn('test pause', { step });
  await new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    signal?.addEventListener('abort', () => resolve(), { once: true });
  });
  throwIfAborted(signal);
}

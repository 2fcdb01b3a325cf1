import { BangerError, ErrorCode } from './errors.js';

/**
 * In-process keyed mutex: `run(key, fn)` runs `fn` after every earlier holder of `key`
 * finished (success or failure). The one keyed lock of banger: per VM name (vms), per kernel
 * name (kernels) and per blob digest (the content store, shared by every service of a root), so two
 * concurrent pulls of one kernel download it once. Waiting respects `signal`.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** True while someone holds or waits for `key`. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    try {
      await waitFor(prev, signal);
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

function waitFor(p: Promise<void>, signal?: AbortSignal): Promise<void> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason ?? new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason ?? new BangerError(ErrorCode.Cancelled, 'operation cancelled'));
    signal.addEventListener('abort', onAbort, { once: true });
    const done = () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    };
    p.then(done, done);
  });
}

import { BangerError, ErrorCode } from '../core/errors.js';
import type { ProgressEvent } from '../core/operation.js';

/** What every long SDK call takes: a progress callback and a signal that cancels it. */
export interface OperationOptions {
  /** Called with each progress report (`$/progress`) while the daemon works. */
  onProgress?: (ev: ProgressEvent) => void;
  /**
   * Cancels the operation: the daemon unwinds exactly as on the CLI's Ctrl-C (partial files,
   * taps, processes removed) and the call rejects with E_CANCELLED.
   */
  signal?: AbortSignal;
}

/** Progress reports kept for an iterator that has not caught up (older ones are dropped). */
const MAX_QUEUED = 10_000;

/**
 * A long call in flight (a pull, an import, a VM create). Await it for the result, or iterate
 * it for its progress first:
 *
 * ```ts
 * const op = b.images.pull('docker.io/library/debian:bookworm');
 * for await (const ev of op) console.log(ev.stage, ev.message);
 * const image = await op;
 * ```
 *
 * The iterator ends when the operation settles and throws its error if it failed.
 */
export class Operation<T> implements PromiseLike<T>, AsyncIterable<ProgressEvent> {
  private readonly result: Promise<T>;
  private readonly queue: ProgressEvent[] = [];
  private wake?: () => void;
  private settled = false;
  /** Operations can be passed wherever a Promise is expected. */
  readonly [Symbol.toStringTag] = 'Operation';

  /** `run` gets the progress sink to pass to the RPC call. */
  constructor(run: (onProgress: (ev: ProgressEvent) => void) => Promise<T>, onProgress?: (ev: ProgressEvent) => void) {
    const sink = (ev: ProgressEvent) => {
      try {
        onProgress?.(ev);
      } catch {
        /* a throwing callback must not break the call */
      }
      if (this.queue.length >= MAX_QUEUED) this.queue.shift();
      this.queue.push(ev);
      this.wake?.();
    };
    this.result = Promise.resolve()
      .then(() => run(sink))
      .finally(() => {
        this.settled = true;
        this.wake?.();
      });
    this.result.catch(() => {});
  }

  // biome-ignore lint/suspicious/noThenProperty: an Operation is awaitable on purpose (docs/sdk.md: await it, or iterate its progress first)
  then<A = T, B = never>(
    onFulfilled?: ((value: T) => A | PromiseLike<A>) | null,
    onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.result.then(onFulfilled, onRejected);
  }

  catch<B = never>(onRejected?: ((reason: unknown) => B | PromiseLike<B>) | null): Promise<T | B> {
    return this.result.catch(onRejected);
  }

  finally(onFinally?: (() => void) | null): Promise<T> {
    return this.result.finally(onFinally);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ProgressEvent> {
    for (;;) {
      while (this.queue.length) yield this.queue.shift()!;
      if (this.settled) break;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
    await this.result; // rethrows the operation's error
  }
}

/** E_CANCELLED at once when `signal` is already aborted (the request is never sent). */
export function checkSignal(signal?: AbortSignal): void {
  if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled before it started', { cause: signal.reason });
}

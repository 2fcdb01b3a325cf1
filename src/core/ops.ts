import { AsyncLocalStorage } from 'node:async_hooks';
import type { Logger } from './log.js';

/**
 * Which operation (RPC method + request id) the running code belongs to, so a failure that
 * escapes every handler can still be blamed on the request that caused it.
 * `runOp` is called by the RPC server around each handler; `installCrashGuards` makes the
 * daemon log an uncaught exception or unhandled rejection with that operation (and every
 * operation in flight) instead of dying: a misbehaving peer fails one operation, never the
 * daemon. A crash that still happens (native abort, OOM) is restarted by systemd
 * (`Restart=on-failure`) and its debris removed by the start-up reconcile.
 */
export interface Op {
  method: string;
  id: string | number;
  startedAt: number;
}

const als = new AsyncLocalStorage<Op>();
const inFlight = new Set<Op>();

export function runOp<T>(op: { method: string; id: string | number }, fn: () => Promise<T>): Promise<T> {
  const o: Op = { ...op, startedAt: Date.now() };
  inFlight.add(o);
  return als.run(o, fn).finally(() => inFlight.delete(o));
}

export function currentOp(): Op | undefined {
  return als.getStore();
}

export function opsInFlight(): Op[] {
  return [...inFlight];
}

function describe(o: Op | undefined): Record<string, unknown> | null {
  return o ? { method: o.method, rpcId: typeof o.id === 'string' ? o.id.slice(0, 64) : o.id, runningMs: Date.now() - o.startedAt } : null;
}

/** Install once per process; returns a function that removes the guards (tests). */
export function installCrashGuards(log: Logger): () => void {
  const report = (kind: string, e: unknown) => {
    const err = e instanceof Error ? e : new Error(String(e));
    log.error(`${kind} (the daemon keeps serving)`, {
      op: describe(currentOp()),
      inFlight: opsInFlight().map(describe),
      error: err.message,
      code: (err as { code?: string }).code,
      stack: err.stack?.split('\n').slice(0, 12).join('\n'),
    });
  };
  const onException = (e: unknown) => report('uncaught exception', e);
  const onRejection = (e: unknown) => report('unhandled rejection', e);
  process.on('uncaughtException', onException);
  process.on('unhandledRejection', onRejection);
  return () => {
    process.off('uncaughtException', onException);
    process.off('unhandledRejection', onRejection);
  };
}

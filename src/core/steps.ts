import { BangerError, ErrorCode, throwIfAborted } from './errors.js';
import type { UndoStack } from './undo.js';

/** Progress of one step: its name, a message, and `done` once it finished. */
export type StageReporter = (stage: string, message?: string, done?: boolean) => void;

export interface StepTiming {
  name: string;
  ms: number;
  ok: boolean;
}

/**
 * A failure tagged with the step it happened in: `details.step` (the innermost step wins; the
 * message, code, hint and other details are kept). A non-BangerError becomes E_INTERNAL (what
 * the RPC layer would call it anyway) with the same message and the original as `cause`.
 * Code that needs to know where something failed reads `details.step`, never the message.
 */
export function tagStep(e: unknown, step: string): BangerError {
  if (e instanceof BangerError) {
    if (e.details?.step !== undefined) return e;
    const tagged = new BangerError(e.code, e.message, { hint: e.hint, cause: e.cause ?? e, details: { ...e.details, step } });
    tagged.stack = e.stack;
    return tagged;
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new BangerError(ErrorCode.Internal, msg, { hint: 'this is a bug in banger; see the daemon log', cause: e, details: { step } });
}

/** The step an error was tagged with (`tagStep`), if any. */
export function stepOf(e: unknown): string | undefined {
  const s = e instanceof BangerError ? e.details?.step : undefined;
  return typeof s === 'string' ? s : undefined;
}

/**
 * Named steps of one operation, in one place: each `run(name, fn)` checks cancellation first,
 * reports progress (`stage(name, message)` then `stage(name, doneMessage, true)`), times the
 * step (`timings`, and the `log` callback), and tags any failure with `details.step` (worded
 * by the `tag` option first, when given). Undo
 * actions registered with `undo(label, fn)` go on the operation's one `UndoStack`, so a failure anywhere unwinds everything newest first; unwinding is the
 * caller's (`UndoStack.unwind`), after all parallel steps settled.
 * Steps may run in parallel (`Promise.all` of several `run`s); each keeps its own timing.
 */
export class StepRunner {
  readonly timings: StepTiming[] = [];

  constructor(
    private readonly o: {
      undo: UndoStack;
      signal?: AbortSignal;
      stage?: StageReporter;
      log?: (msg: string, fields: Record<string, unknown>) => void;
      /**
       * How a failure of step `step` is worded for this operation (e.g. prefixed with what is
       * being built, or given more details); `tagStep` then makes sure it carries the step.
       * Default: the failure as it is.
       */
      tag?: (e: unknown, step: string) => unknown;
    },
  ) {}

  private started: string | undefined;

  /** The step started last (running, or the one that failed), for messages that name it. */
  get current(): string | undefined {
    return this.started;
  }

  get signal(): AbortSignal | undefined {
    return this.o.signal;
  }

  /**
   * Run step `name`. `message`: the progress line when it starts (none when undefined and
   * `silent`); `done`: the progress line when it ends (from its result).
   */
  async run<T>(name: string, fn: () => Promise<T> | T, opts: { message?: string; done?: (r: T) => string | undefined; silent?: boolean } = {}): Promise<T> {
    const t0 = Date.now();
    let ok = false;
    this.started = name;
    try {
      throwIfAborted(this.o.signal);
      if (!opts.silent) this.o.stage?.(name, opts.message);
      const r = await fn();
      ok = true;
      if (!opts.silent) this.o.stage?.(name, opts.done?.(r), true);
      return r;
    } catch (e) {
      throw tagStep(this.o.tag ? this.o.tag(e, name) : e, name);
    } finally {
      const ms = Date.now() - t0;
      this.timings.push({ name, ms, ok });
      this.o.log?.(ok ? 'step done' : 'step failed', { step: name, ms });
    }
  }

  /** The progress reporter (for code that reports sub-stages itself). */
  get stage(): StageReporter {
    return this.o.stage ?? (() => undefined);
  }

  /** Register the undo of something a step just did, on the operation's one stack. */
  undo(label: string, fn: () => Promise<void> | void): void {
    this.o.undo.push(label, fn);
  }
}

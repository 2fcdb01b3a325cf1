/**
 * The one error type of banger. Every failure a user can meet carries a stable `code`
 * (matched by programs and tests, never the message), a `hint` saying what to do, and the
 * underlying `cause`. The CLI prints `message` + `hint`; a stack only under `--debug`.
 */
export class BangerError extends Error {
  readonly code: string;
  readonly hint?: string;
  readonly details?: Record<string, unknown>;

  constructor(code: string, message: string, opts: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'BangerError';
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  toJSON(): { code: string; message: string; hint?: string; details?: Record<string, unknown> } {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

/** Stable error codes. Add here; never rename one that shipped. */
export const ErrorCode = {
  Invalid: 'E_INVALID',
  NotFound: 'E_NOT_FOUND',
  Exists: 'E_EXISTS',
  InUse: 'E_IN_USE',
  Cancelled: 'E_CANCELLED',
  Exec: 'E_EXEC',
  Digest: 'E_DIGEST',
  Http: 'E_HTTP',
  Unsafe: 'E_UNSAFE_ENTRY',
  Bundle: 'E_BUNDLE',
  Daemon: 'E_DAEMON',
  NoDaemon: 'E_NO_DAEMON',
  /** The connection to bangerd was lost while a call or a stream was under way. */
  Disconnected: 'E_DISCONNECTED',
  Permission: 'E_PERMISSION',
  Registry: 'E_REGISTRY',
  Auth: 'E_AUTH',
  Platform: 'E_PLATFORM',
  Signature: 'E_SIGNATURE',
  Vmm: 'E_VMM',
  Network: 'E_NETWORK',
  Timeout: 'E_TIMEOUT',
  Internal: 'E_INTERNAL',
  /** Command-line usage error (unknown option, missing argument): exit code 2. */
  Usage: 'E_USAGE',
  /** Input past a configured limit (e.g. an image unpacking to more than imageLimits allow). */
  TooLarge: 'E_TOO_LARGE',
  /** `vm create --init-script` exited non-zero (details: exitCode, tail). */
  InitScript: 'E_INIT_SCRIPT',
  /** The guest agent refused a request (bad path, command not found) or broke its protocol. */
  Agent: 'E_AGENT',
  /** A saved VM state does not fit what it would be restored into (VMM version, shape), or is damaged. */
  Conflict: 'E_CONFLICT',
} as const;

export function isBangerError(e: unknown, code?: string): e is BangerError {
  return e instanceof BangerError && (code === undefined || e.code === code);
}

/** Throws E_CANCELLED if the signal was aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'operation cancelled', { cause: signal.reason });
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

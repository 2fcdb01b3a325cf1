import { BangerError, ErrorCode } from '../core/errors.js';

/** `banger mcp`'s limits and defaults (its flags). A tool call cannot raise any of them. */
export interface McpOptions {
  /** See and act on every VM of the daemon, not only the ones this server created. */
  all: boolean;
  /** Most VMs this server keeps at once. */
  maxVms: number;
  /** The longest a `sandbox_exec` may run, in seconds (its `timeout` is capped at this). */
  maxExecSeconds: number;
  /** `sandbox_exec`'s timeout when the call gives none, in seconds. */
  defaultExecSeconds: number;
  /** Bytes of stdout and of stderr returned per exec (the rest is cut, with a note). */
  maxOutputBytes: number;
  /** Bytes `sandbox_read_file` returns at most (a larger file is cut, with a note). */
  maxReadBytes: number;
  /** The image `sandbox_create` uses when the call names none. */
  defaultImage: string;
  /** Default lifetime of a sandbox in seconds (0: until the server exits). */
  ttlSeconds: number;
  /** Leave this server's VMs running when it exits (default: remove them). */
  keep: boolean;
}

export const MCP_DEFAULTS: McpOptions = {
  all: false,
  maxVms: 4,
  maxExecSeconds: 600,
  defaultExecSeconds: 120,
  maxOutputBytes: 64 * 1024,
  maxReadBytes: 256 * 1024,
  defaultImage: 'debian-bookworm',
  ttlSeconds: 3600,
  keep: false,
};

/** Parses a whole-number flag of at least `min`. */
export function positiveInt(flag: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new BangerError(ErrorCode.Usage, `${flag}: '${v}' is not a whole number >= ${min}`);
    return n;
  };
}

import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** Structured logger: JSON lines to a file and a readable line to stderr. */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

/** Longest text of one log field; longer strings are cut (a client can put megabytes in a field). */
export const MAX_LOG_FIELD = 2048;

/** A log field bounded in size and always serialisable (deep, circular or huge values are cut). */
export function boundField(v: unknown): unknown {
  if (typeof v === 'string') return v.length > MAX_LOG_FIELD ? `${v.slice(0, MAX_LOG_FIELD)}…(${v.length} chars)` : v;
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? String(v) : v;
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    return '(unserialisable value)';
  }
  return text.length > MAX_LOG_FIELD ? `${text.slice(0, MAX_LOG_FIELD)}…(${text.length} chars)` : v;
}

function boundFields(fields: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields ?? {})) out[k] = boundField(v);
  return out;
}

export function createLogger(opts: { file?: string; stderr?: boolean; level?: Level; base?: Record<string, unknown> } = {}): Logger {
  const min = order[opts.level ?? ((process.env.BANGER_LOG_LEVEL as Level) || 'info')] ?? 20;
  if (opts.file) mkdirSync(dirname(opts.file), { recursive: true });
  const write = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    fields = boundFields(fields);
    const rec = { time: new Date().toISOString(), level, msg: boundField(msg) as string, ...boundFields(opts.base), ...fields };
    if (opts.file) {
      try {
        appendFileSync(opts.file, JSON.stringify(rec) + '\n', { mode: 0o600 });
      } catch {
        /* logging must never take the daemon down */
      }
    }
    if (opts.stderr) {
      const extra = { ...boundFields(opts.base), ...fields };
      const kv = Object.entries(extra)
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      process.stderr.write(`${rec.time} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? ' ' + kv : ''}\n`);
    }
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (fields) => createLogger({ ...opts, base: { ...opts.base, ...fields } }),
  };
}

export const nullLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => nullLogger };

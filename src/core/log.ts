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

export function createLogger(opts: { file?: string; stderr?: boolean; level?: Level; base?: Record<string, unknown> } = {}): Logger {
  const min = order[opts.level ?? ((process.env.BANGER_LOG_LEVEL as Level) || 'info')] ?? 20;
  if (opts.file) mkdirSync(dirname(opts.file), { recursive: true });
  const write = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const rec = { time: new Date().toISOString(), level, msg, ...opts.base, ...fields };
    if (opts.file) {
      try {
        appendFileSync(opts.file, JSON.stringify(rec) + '\n');
      } catch {
        /* logging must never take the daemon down */
      }
    }
    if (opts.stderr) {
      const extra = { ...opts.base, ...fields };
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

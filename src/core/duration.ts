import { BangerError, ErrorCode } from './errors.js';

/**
 * Durations (`vm create --ttl`, `vm extend`, config `vm.ttl`): a whole number followed by one
 * unit, `s`, `m`, `h` or `d` (`30s`, `10m`, `2h`, `1d`), or several in decreasing order
 * (`1h30m`). Parsed here and only here; everyone else handles whole seconds.
 */
const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };
/** The longest lifetime banger accepts: 366 days. */
export const MAX_DURATION_SECONDS = 366 * 86400;

/** Why `v` is not a duration, or undefined when it is one (then `durationSeconds` succeeds). */
export function durationProblem(v: string): string | undefined {
  if (!/^(?:\d+[smhd])+$/.test(v)) return `'${v}' is not a duration (examples: 30s, 10m, 2h, 1d, 1h30m)`;
  const parts = [...v.matchAll(/(\d+)([smhd])/g)];
  const units = parts.map((m) => UNIT[m[2]!]!);
  if (units.some((u, i) => i > 0 && u >= units[i - 1]!)) return `'${v}': units must go from largest to smallest, each once (e.g. 1h30m)`;
  const s = parts.reduce((a, m) => a + Number(m[1]) * UNIT[m[2]!]!, 0);
  if (s <= 0) return `'${v}' must be longer than zero`;
  if (s > MAX_DURATION_SECONDS) return `'${v}' is longer than 366 days`;
  return undefined;
}

/** Whole seconds in `v`; E_INVALID naming `field` (the flag or config key) when it is not a duration. */
export function durationSeconds(field: string, v: string): number {
  const problem = durationProblem(v);
  if (problem) throw new BangerError(ErrorCode.Invalid, `${field}: ${problem}`, { details: { field } });
  return [...v.matchAll(/(\d+)([smhd])/g)].reduce((a, m) => a + Number(m[1]) * UNIT[m[2]!]!, 0);
}

/** A short human rendering of `ms` milliseconds left: `45s`, `9m12s`, `3h05m`, `2d4h`; `expired` at or below zero. */
export function formatRemaining(ms: number): string {
  if (ms <= 0) return 'expired';
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

/**
 * The deadline after `vm extend`: `seconds` past the current deadline, or past `now` when
 * there is none or it already passed (an extension never lands in the past).
 */
export function extendedDeadline(current: string | null, seconds: number, now = Date.now()): string {
  const base = current ? Math.max(Date.parse(current), now) : now;
  return new Date(base + seconds * 1000).toISOString();
}

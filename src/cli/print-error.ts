import { BangerError } from '../core/errors.js';

/**
 * Prints an error the way the CLI's top level does (message, then hint), for commands that
 * report a failure and go on (vm exec's 126/127, banger run's cleanup).
 */
export function printError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`error: ${msg}\n`);
  if (e instanceof BangerError && e.hint) process.stderr.write(`hint: ${e.hint}\n`);
}

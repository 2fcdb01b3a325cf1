import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BangerError, ErrorCode } from './errors.js';

/**
 * The directory banger is installed in (the one holding `bin/bangerd`), found by walking up
 * from the calling module (`import.meta.url`). Works from the compiled modules under
 * dist/src/ and from the bundled CLI (dist/cli.mjs) alike.
 */
export function installRoot(moduleUrl: string): string {
  const start = dirname(fileURLToPath(moduleUrl));
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'bin', 'bangerd'))) return dir;
    if (dirname(dir) === dir) throw new BangerError(ErrorCode.Internal, `cannot find bin/bangerd in ${start} or any directory above it`);
  }
}

import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** The compiled stand-in script (dist/test/helpers/firecracker-standin/standin.js). */
export const STANDIN_JS = resolve(new URL('.', import.meta.url).pathname, 'standin.js');

/**
 * Makes an executable `firecracker` for tests that is the STAND-IN (standin.ts), run by this
 * test's Node.js. Point `binaries.firecracker` at `binary`. `setKnobs` rewrites the knob file
 * the stand-in reads at each start (FC_STANDIN_FAIL_PATH, _DIE_EARLY, _NO_SOCKET, _VERSION),
 * so one daemon can meet a failing Firecracker and a working one in turn.
 */
export function makeStandin(): { dir: string; binary: string; setKnobs(k: Record<string, string>): void; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'banger-fc-standin-'));
  const binary = join(dir, 'firecracker');
  const knobs = join(dir, 'knobs.json');
  writeFileSync(knobs, '{}');
  writeFileSync(
    binary,
    `#!/bin/sh\n# banger test stand-in for Firecracker (not Firecracker)\nFC_STANDIN_KNOBS='${knobs}' exec '${process.execPath}' '${STANDIN_JS}' "$@"\n`,
  );
  chmodSync(binary, 0o755);
  chmodSync(dir, 0o755);
  return {
    dir,
    binary,
    setKnobs: (k) => writeFileSync(knobs, JSON.stringify(k)),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The compiled stand-in jailer (jailer.ts). */
export const STANDIN_JAILER_JS = resolve(new URL('.', import.meta.url).pathname, 'jailer.js');

/**
 * An executable `jailer` for tests that is the STAND-IN jailer (jailer.ts): bash runs it with
 * this test's Node.js, then execs the command it prints (so the pid stays, as with the real
 * jailer's exec). Point `firecracker.jailer.binary` at `binary`.
 */
export function makeStandinJailer(): { dir: string; binary: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'banger-jailer-standin-'));
  const binary = join(dir, 'jailer');
  writeFileSync(
    binary,
    `#!/bin/bash\n# banger test stand-in for Firecracker's jailer (not the jailer)\nout=$('${process.execPath}' '${STANDIN_JAILER_JS}' "$@") || exit $?\nmapfile -t cmd <<<"$out"\nexec "\${cmd[@]}"\n`,
  );
  chmodSync(binary, 0o755);
  chmodSync(dir, 0o755);
  return { dir, binary, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

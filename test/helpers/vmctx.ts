import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigSchema, type Config } from '../../src/core/config.js';
import { openDb } from '../../src/core/db.js';
import { exec, type Exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { layout } from '../../src/core/paths.js';
import type { Context } from '../../src/core/context.js';

/** `exec` that runs every command inside network namespace `ns`. */
export function netnsExec(ns: string): Exec {
  return (argv, opts) => exec(['ip', 'netns', 'exec', ns, ...argv], opts);
}

/** A service Context on a temp root (real SQLite), with an optional exec override. */
export function tempContext(opts: { exec?: Exec; config?: Record<string, unknown> } = {}): { ctx: Context; cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'banger-vmctx-'));
  const lay = layout(root, join(root, 'bangerd.sock'));
  const cfg = ConfigSchema.parse(opts.config ?? {});
  const config: Config = { ...cfg, root, socket: lay.socket, configFile: join(root, 'config.json') };
  const db = openDb(lay.db);
  const ctx: Context = { config, layout: lay, db, log: nullLogger, exec: opts.exec ?? exec };
  return {
    ctx,
    cleanup() {
      db.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

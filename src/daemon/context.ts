import type { Config } from '../core/config.js';
import type { DB } from '../core/db.js';
import type { Exec } from '../core/exec.js';
import type { Logger } from '../core/log.js';
import type { Layout } from '../core/paths.js';

/**
 * Everything a service needs from the outside world, passed explicitly (no globals).
 * Tests build one with a temp root and, where needed, a fake `exec`.
 */
export interface Context {
  config: Config;
  layout: Layout;
  db: DB;
  log: Logger;
  exec: Exec;
}

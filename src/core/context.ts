import type { Config } from './config.js';
import type { DB } from './db.js';
import type { Exec } from './exec.js';
import type { Logger } from './log.js';
import type { Layout } from './paths.js';

/**
 * Everything a service needs from the outside world, passed explicitly (no globals).
 * The daemon builds one per root (`daemon/main.ts`); tests build one with a temp root and,
 * where needed, a fake `exec`. Lives in core so every domain can take it without importing
 * the daemon.
 */
export interface Context {
  config: Config;
  layout: Layout;
  db: DB;
  log: Logger;
  exec: Exec;
}

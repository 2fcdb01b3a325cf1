import Database from 'better-sqlite3';
import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { migrations } from './migrations.js';

export type DB = Database.Database;

/**
 * Open the state database: WAL, foreign keys, busy timeout, and apply pending migrations,
 * each in its own transaction together with the bump of `user_version`.
 */
export function openDb(file: string): DB {
  mkdirSync(dirname(file), { recursive: true });
  privateDbFiles(file);
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  db.pragma('synchronous = NORMAL');
  migrate(db);
  return db;
}

/**
 * The database holds registry credentials (sealed) and every VM's details: 0600. SQLite gives
 * the -wal and -shm files the mode of the main file, so creating that one 0600 first is
 * enough for new files; existing ones (an older install) are chmodded.
 */
export function privateDbFiles(file: string): void {
  closeSync(openSync(file, 'a', 0o600));
  for (const f of [file, `${file}-wal`, `${file}-shm`]) {
    try {
      chmodSync(f, 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
}

export function migrate(db: DB): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let v = current; v < migrations.length; v++) {
    const m = migrations[v]!;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return migrations.length;
}

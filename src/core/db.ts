import { chmodSync, closeSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { migrations } from './migrations.js';

/**
 * The state database: Node's built-in `node:sqlite` behind the small surface the services use
 * (the one better-sqlite3 had): `db.prepare(sql).run/get/all`, `db.exec`, `db.transaction(fn)()`,
 * `db.pragma`, `db.close`. Differences from raw node:sqlite that this layer hides:
 * - rows are plain objects (node:sqlite returns null-prototype objects);
 * - `true`/`false` bind as 1/0 and `undefined` as NULL (node:sqlite rejects both);
 * - `changes` and `lastInsertRowid` are numbers.
 * Named parameters: `@name`, `:name` or `$name` in the SQL, bare keys (`{ name }`) in the object.
 */

/** A value the services may bind: SQLite's own types plus booleans (1/0) and undefined (NULL). */
export type BindValue = SQLInputValue | boolean | undefined;
export type BindArgs = BindValue[] | [Record<string, BindValue>, ...BindValue[]];

export interface RunResult {
  changes: number;
  lastInsertRowid: number;
}

export class Statement {
  constructor(private readonly stmt: StatementSync) {}

  /** Execute; returns the number of changed rows and the last inserted rowid. */
  run(...params: BindArgs): RunResult {
    const r = this.stmt.run(...bindAll(params));
    return { changes: Number(r.changes), lastInsertRowid: Number(r.lastInsertRowid) };
  }

  /** The first row as a plain object, or undefined when there is none. */
  get(...params: BindArgs): unknown {
    const row = this.stmt.get(...bindAll(params));
    return row === undefined ? undefined : { ...row };
  }

  /** Every row as plain objects. */
  all(...params: BindArgs): unknown[] {
    return this.stmt.all(...bindAll(params)).map((row) => ({ ...row }));
  }
}

export class DB {
  private depth = 0;

  constructor(readonly raw: DatabaseSync) {}

  prepare(sql: string): Statement {
    return new Statement(this.raw.prepare(sql));
  }

  /** Run one or more statements with no parameters and no result (DDL, migrations). */
  exec(sql: string): void {
    this.raw.exec(sql);
  }

  /**
   * Wrap `fn` in a transaction: calling the result runs `fn` between BEGIN and COMMIT and returns
   * its value; if `fn` throws, everything it wrote is rolled back and the error is rethrown.
   * Nested calls use savepoints (an inner failure undoes only the inner part). `fn` must be
   * synchronous: a returned promise rolls back and throws a TypeError.
   */
  transaction<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return (...args: A): R => {
      const level = this.depth++;
      const sp = `banger_sp${level}`;
      this.raw.exec(level === 0 ? 'BEGIN' : `SAVEPOINT ${sp}`);
      try {
        const r = fn(...args);
        if (r && typeof (r as { then?: unknown }).then === 'function')
          throw new TypeError('db.transaction(fn): fn returned a promise; transaction functions must be synchronous');
        this.raw.exec(level === 0 ? 'COMMIT' : `RELEASE ${sp}`);
        return r;
      } catch (e) {
        if (level === 0) {
          if (this.raw.isTransaction) this.raw.exec('ROLLBACK');
        } else {
          this.raw.exec(`ROLLBACK TO ${sp}`);
          this.raw.exec(`RELEASE ${sp}`);
        }
        throw e;
      } finally {
        this.depth--;
      }
    };
  }

  /** `PRAGMA source`: every result row, or with `simple` the first column of the first row. */
  pragma(source: string, opts: { simple?: boolean } = {}): unknown {
    const rows = this.raw.prepare(`PRAGMA ${source}`).all();
    if (!opts.simple) return rows.map((r) => ({ ...r }));
    const first = rows[0];
    return first === undefined ? undefined : Object.values(first)[0];
  }

  close(): void {
    if (this.raw.isOpen) this.raw.close();
  }
}

function bindOne(v: BindValue): SQLInputValue {
  if (v === undefined) return null;
  if (typeof v === 'boolean') return v ? 1 : 0;
  return v;
}

function bindAll(params: BindArgs): SQLInputValue[] {
  return params.map((p) => {
    if (p !== null && typeof p === 'object' && !ArrayBuffer.isView(p)) {
      const out: Record<string, SQLInputValue> = {};
      for (const [k, v] of Object.entries(p)) out[k] = bindOne(v);
      return out as unknown as SQLInputValue;
    }
    return bindOne(p as BindValue);
  });
}

/** Open a database file as it is (no pragmas, no migrations): for tools and tests. */
export function openDatabase(file: string, opts: { readOnly?: boolean } = {}): DB {
  return new DB(new DatabaseSync(file, { readOnly: opts.readOnly ?? false }));
}

/**
 * Open the state database: WAL, foreign keys, busy timeout, and apply pending migrations,
 * each in its own transaction together with the bump of `user_version`.
 */
export function openDb(file: string): DB {
  mkdirSync(dirname(file), { recursive: true });
  privateDbFiles(file);
  const db = openDatabase(file);
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

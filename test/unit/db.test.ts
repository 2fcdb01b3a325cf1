import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrations } from '../../src/core/migrations.js';
import { migrate, openDatabase, openDb, type DB } from '../../src/core/db.js';

/** The node:sqlite layer keeps the surface the services were written against (better-sqlite3's). */
function withDb(fn: (db: DB, dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'banger-db-'));
  const db = openDatabase(join(dir, 't.db'));
  try {
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, flag INTEGER, note TEXT)');
    fn(db, dir);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('rows are plain objects; changes and lastInsertRowid are numbers', () => {
  withDb((db) => {
    const r = db.prepare('INSERT INTO t (name, flag) VALUES (?, ?)').run('a', 1);
    assert.deepEqual(r, { changes: 1, lastInsertRowid: 1 });
    const row = db.prepare('SELECT name, flag FROM t WHERE id = ?').get(1);
    assert.equal(Object.getPrototypeOf(row), Object.prototype);
    assert.deepStrictEqual(row, { name: 'a', flag: 1 });
    assert.deepStrictEqual(db.prepare('SELECT name FROM t').all(), [{ name: 'a' }]);
    assert.equal(db.prepare('SELECT * FROM t WHERE id = ?').get(99), undefined);
    assert.equal(db.prepare('DELETE FROM t WHERE name = ?').run('zz').changes, 0);
  });
});

test('booleans bind as 1/0 and undefined as NULL, positionally and by name', () => {
  withDb((db) => {
    db.prepare('INSERT INTO t (name, flag, note) VALUES (?, ?, ?)').run('a', true, undefined);
    db.prepare('INSERT INTO t (name, flag, note) VALUES (@name, @flag, @note)').run({ name: 'b', flag: false, note: undefined });
    assert.deepStrictEqual(db.prepare('SELECT name, flag, note FROM t ORDER BY id').all(), [
      { name: 'a', flag: 1, note: null },
      { name: 'b', flag: 0, note: null },
    ]);
  });
});

test('named parameters: @name, :name and $name with bare keys', () => {
  withDb((db) => {
    db.prepare('INSERT INTO t (name, note) VALUES (@n, :x)').run({ n: 'a', x: 'one' });
    db.prepare('INSERT INTO t (name, note) VALUES ($n, $x)').run({ n: 'b', x: 'two' });
    assert.deepStrictEqual(db.prepare('SELECT note FROM t WHERE name = @n').get({ n: 'b' }), { note: 'two' });
  });
});

test("transaction(fn)() returns fn's value, rolls back everything on throw, nests with savepoints", () => {
  withDb((db) => {
    const ins = db.prepare('INSERT INTO t (name) VALUES (?)');
    const count = () => (db.prepare('SELECT count(*) AS c FROM t').get() as { c: number }).c;
    assert.equal(db.transaction((n: string) => ins.run(n).lastInsertRowid)('a'), 1);
    assert.throws(
      () =>
        db.transaction(() => {
          ins.run('b');
          ins.run('a'); // UNIQUE violation
        })(),
      /UNIQUE/,
    );
    assert.equal(count(), 1, 'the failed transaction left nothing');
    assert.equal(db.raw.isTransaction, false);
    // An inner failure caught by the outer function undoes only the inner part.
    db.transaction(() => {
      ins.run('c');
      assert.throws(
        () =>
          db.transaction(() => {
            ins.run('d');
            throw new Error('inner');
          })(),
        /inner/,
      );
      ins.run('e');
    })();
    assert.deepEqual(
      (db.prepare('SELECT name FROM t ORDER BY id').all() as { name: string }[]).map((r) => r.name),
      ['a', 'c', 'e'],
    );
    // A thrown error in the outer one undoes the inner, already released savepoint too.
    assert.throws(
      () =>
        db.transaction(() => {
          db.transaction(() => ins.run('f'))();
          throw new Error('outer');
        })(),
      /outer/,
    );
    assert.equal(count(), 3);
    // Async functions are refused (the commit would happen before their work).
    assert.throws(() => db.transaction(async () => ins.run('g'))(), TypeError);
    assert.equal(count(), 3);
    assert.equal(db.raw.isTransaction, false);
  });
});

test('openDb: WAL, foreign keys, every migration applied once; pragma(simple) reads user_version', () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-db-'));
  try {
    const db = openDb(join(dir, 'state', 'banger.db'));
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    assert.equal(db.pragma('user_version', { simple: true }), migrations.length);
    assert.deepStrictEqual(db.pragma('user_version'), [{ user_version: migrations.length }]);
    assert.equal(migrate(db), migrations.length);
    db.close();
    const ro = openDatabase(join(dir, 'state', 'banger.db'), { readOnly: true });
    assert.throws(() => ro.exec('CREATE TABLE x (a)'), /readonly/i);
    ro.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

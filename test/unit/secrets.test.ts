import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb } from '../../src/core/db.js';
import { SEALED_PREFIX, SecretBox } from '../../src/core/secrets.js';
import { CredentialStore } from '../../src/images/registry/auth.js';
import type { Exec } from '../../src/core/exec.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'banger-sec-'));
  dirs.push(d);
  return d;
}
const noExec = (async () => {
  throw new Error('no helper expected');
}) as unknown as Exec;

test('SecretBox: a 0600 key made once, authenticated sealing, legacy plain text passes through', () => {
  const d = tmp();
  const box = new SecretBox(join(d, 'secret.key'));
  const sealed = box.seal('hunter2');
  assert.ok(sealed.startsWith(SEALED_PREFIX));
  assert.ok(!sealed.includes('hunter2'));
  assert.notEqual(box.seal('hunter2'), sealed, 'a fresh IV each time');
  assert.equal(statSync(join(d, 'secret.key')).mode & 0o777, 0o600);
  assert.equal(readFileSync(join(d, 'secret.key')).length, 32);
  assert.equal(new SecretBox(join(d, 'secret.key')).open(sealed), 'hunter2', 'another instance reads the same key');
  assert.equal(box.open('plain-legacy'), 'plain-legacy');
  const tampered = sealed.slice(0, -4) + (sealed.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  assert.throws(
    () => box.open(tampered),
    (e: any) => e.code === 'E_AUTH',
  );
  writeFileSync(join(d, 'other.key'), Buffer.alloc(32, 1));
  assert.throws(
    () => new SecretBox(join(d, 'other.key')).open(sealed),
    (e: any) => e.code === 'E_AUTH' && /registry login/.test(e.hint),
  );
});

test('registry passwords are stored sealed, read back, and plain rows of an older install are sealed by sealLegacy', async () => {
  const d = tmp();
  const db = openDb(join(d, 'banger.db'));
  try {
    assert.equal(statSync(join(d, 'banger.db')).mode & 0o777, 0o600);
    const store = new CredentialStore(db, noExec, { HOME: d }, new SecretBox(join(d, 'secret.key')));
    store.save('registry.example:5000', 'alice', 's3cret');
    const row = db.prepare('SELECT secret FROM registry_credentials WHERE registry = ?').get('registry.example:5000') as { secret: string };
    assert.ok(row.secret.startsWith(SEALED_PREFIX) && !row.secret.includes('s3cret'), row.secret);
    assert.deepEqual(await store.get('registry.example:5000'), { username: 'alice', password: 's3cret', source: 'banger registry login' });
    db.prepare("INSERT INTO registry_credentials (registry, username, secret, updated_at) VALUES ('old.example', 'bob', 'plain-old', 'then')").run();
    assert.equal((await store.get('old.example'))?.password, 'plain-old');
    assert.equal(store.sealLegacy(), 1);
    assert.equal(store.sealLegacy(), 0);
    const old = db.prepare("SELECT secret FROM registry_credentials WHERE registry = 'old.example'").get() as { secret: string };
    assert.ok(old.secret.startsWith(SEALED_PREFIX));
    assert.equal((await store.get('old.example'))?.password, 'plain-old');
  } finally {
    db.close();
  }
});

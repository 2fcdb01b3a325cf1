import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { ensureClientKey, HostKeyPool, sshPaths } from '../../src/vms/ssh.js';
import { missingTools } from '../helpers/daemon.js';

const skip = missingTools('ssh-keygen');

test('client key: made once (0600); a 0640 copy for the banger group; idempotent', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-ssh-'));
  try {
    const p = sshPaths(join(dir, 'ssh'));
    const pub1 = await ensureClientKey(exec, p);
    assert.match(pub1, /^ssh-ed25519 \S+ banger$/);
    assert.equal(statSync(p.key).mode & 0o777, 0o600);
    const gid = process.getgid!();
    const pub2 = await ensureClientKey(exec, p, gid);
    assert.equal(pub2, pub1, 'the key is made only once');
    assert.equal(statSync(p.groupKey).mode & 0o777, 0o640);
    assert.equal(statSync(p.groupKey).gid, gid);
    assert.equal(statSync(p.key).mode & 0o777, 0o600, "root's key stays 0600 (OpenSSH refuses a shared own key)");
    assert.deepEqual(readFileSync(p.groupKey), readFileSync(p.key));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('host key pool: ed25519 pairs made ahead by ssh-keygen, each handed out once, fresh when empty', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-ssh-'));
  try {
    const pool = new HostKeyPool(exec, join(dir, 'tmp'), 2);
    const cold = await pool.take(join(dir, 'k0'), 'cold');
    assert.match(cold, /^ssh-ed25519 \S+ root@cold$/, 'an empty pool generates on the spot');
    await pool.refill();
    assert.equal(pool.available, 2);
    const a = await pool.take(join(dir, 'ka'), 'box');
    const b = await pool.take(join(dir, 'kb'), 'box');
    assert.equal(pool.available, 0);
    assert.match(a, /^ssh-ed25519 \S+ root@box$/);
    assert.notEqual(a.split(' ')[1], b.split(' ')[1], 'never the same key twice');
    assert.notEqual(a.split(' ')[1], cold.split(' ')[1]);
    for (const [k, pub] of [
      ['ka', a],
      ['kb', b],
      ['k0', cold],
    ] as const) {
      assert.equal(statSync(join(dir, k)).mode & 0o777, 0o600);
      assert.equal(readFileSync(join(dir, `${k}.pub`), 'utf8'), pub + '\n');
      // The private key on disk is the pair of the public key handed out.
      const derived = (await exec(['ssh-keygen', '-y', '-f', join(dir, k)])).stdout.trim().split(' ').slice(0, 2).join(' ');
      assert.equal(derived, pub.split(' ').slice(0, 2).join(' '));
    }
    assert.deepEqual(readdirSync(join(dir, 'tmp')), [], 'no key material left in the temp dir');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

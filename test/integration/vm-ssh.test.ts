import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { ensureClientKey, generateHostKey, sshPaths } from '../../src/vms/ssh.js';
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

test('host key: ed25519 pair generated per VM, fresh each time', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-ssh-'));
  try {
    const a = await generateHostKey(exec, join(dir, 'k'), 'box');
    const b = await generateHostKey(exec, join(dir, 'k'), 'box');
    assert.match(a, /^ssh-ed25519 \S+ root@box$/);
    assert.notEqual(a, b);
    assert.equal(statSync(join(dir, 'k')).mode & 0o777, 0o600);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

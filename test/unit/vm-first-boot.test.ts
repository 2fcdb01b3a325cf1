import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstBootState } from '../../src/vms/console.js';
import { waitForSsh } from '../../src/vms/ssh.js';
import type { Exec } from '../../src/core/exec.js';
import { isBangerError, ErrorCode } from '../../src/core/errors.js';

test('firstBootState follows the first-boot script between step install and step exec-init', () => {
  assert.deepEqual(firstBootState('[    1.2] Run /init as init process\n'), { installing: false, error: undefined });
  const installing = 'banger-first-boot: step seed: from /dev/vdb\nbanger-first-boot: step install: systemd is missing; installing systemd and an SSH server\nGet:1 http://deb.debian.org ...\n';
  assert.equal(firstBootState(installing).installing, true);
  assert.equal(firstBootState(installing + 'banger-first-boot: step configure: ssh\nbanger-first-boot: step exec-init: /lib/systemd/systemd\n').installing, false);
  const failed = installing + "banger-first-boot: error: step 'install' failed: apt-get install exited 100\r\n";
  assert.equal(firstBootState(failed).error, "step 'install' failed: apt-get install exited 100");
});

/** An exec whose ssh never answers; counts attempts. */
function deadSsh(): { exec: Exec; calls: () => number } {
  let n = 0;
  const exec: Exec = async (argv) => {
    n++;
    return { command: argv, exitCode: 255, stdout: '', stdoutBuffer: Buffer.alloc(0), stderr: 'ssh: connect to host 172.16.0.2 port 22: Connection refused' };
  };
  return { exec, calls: () => n };
}

const paths = { dir: '/x', clientKey: '/x/id', clientPub: '/x/id.pub', knownHosts: '/x/kh', config: '/x/config' } as any;

test('waitForSsh: a watcher extends the deadline while the guest installs, and its error stops the wait', async () => {
  const plain = deadSsh();
  const t0 = Date.now();
  await assert.rejects(waitForSsh(plain.exec, paths, '172.16.0.2', { timeoutMs: 300 }), (e: unknown) => isBangerError(e, ErrorCode.Timeout) && /within 0 s/.test((e as Error).message));
  const plainMs = Date.now() - t0;

  const extended = deadSsh();
  const t1 = Date.now();
  await assert.rejects(waitForSsh(extended.exec, paths, '172.16.0.2', { timeoutMs: 300, watch: async () => 1600 }), (e: unknown) => isBangerError(e, ErrorCode.Timeout) && /within 2 s/.test((e as Error).message));
  assert.ok(Date.now() - t1 >= 1600 && extended.calls() > plain.calls(), `extended wait (${Date.now() - t1} ms, ${extended.calls()} tries) vs plain (${plainMs} ms, ${plain.calls()} tries)`);

  const failing = deadSsh();
  let round = 0;
  await assert.rejects(
    waitForSsh(failing.exec, paths, '172.16.0.2', {
      timeoutMs: 60_000,
      watch: async () => {
        if (++round === 3) throw new Error('step first-boot: apt-get failed');
        return undefined;
      },
    }),
    /step first-boot: apt-get failed/,
  );
  assert.equal(failing.calls(), 2);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstBootState } from '../../src/vms/console.js';
import { sshBanner, waitForSsh } from '../../src/vms/ssh.js';
import type { Exec } from '../../src/core/exec.js';
import { isBangerError, ErrorCode } from '../../src/core/errors.js';

test('firstBootState follows the first-boot script between step install and step exec-init', () => {
  assert.deepEqual(firstBootState('[    1.2] Run /init as init process\n'), { installing: false, error: undefined });
  const installing =
    'banger-first-boot: step seed: from /dev/vdb\nbanger-first-boot: step install: systemd is missing; installing systemd and an SSH server\nGet:1 http://deb.debian.org ...\n';
  assert.equal(firstBootState(installing).installing, true);
  assert.equal(
    firstBootState(installing + 'banger-first-boot: step configure: ssh\nbanger-first-boot: step exec-init: /lib/systemd/systemd\n').installing,
    false,
  );
  const failed = installing + "banger-first-boot: error: step 'install' failed: apt-get install exited 100\r\n";
  assert.equal(firstBootState(failed).error, "step 'install' failed: apt-get install exited 100");
  assert.equal(firstBootState(failed).hint, undefined);
  const hinted = failed + 'banger-first-boot: hint: the guest needs network access to its package mirrors: create the VM with --nat\r\n';
  assert.deepEqual(firstBootState(hinted), {
    installing: true,
    error: "step 'install' failed: apt-get install exited 100",
    hint: 'the guest needs network access to its package mirrors: create the VM with --nat',
  });
  // a hint line not right after the error is not its hint
  assert.equal(firstBootState(failed + 'something else\nbanger-first-boot: hint: x\n').hint, undefined);
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
/** The port answers (no traffic: the address is never contacted). */
const probe = async () => true;

test('waitForSsh: a watcher extends the deadline while the guest installs, and its error stops the wait', async () => {
  const plain = deadSsh();
  const t0 = Date.now();
  await assert.rejects(
    waitForSsh(plain.exec, paths, '172.16.0.2', { timeoutMs: 300, probe }),
    (e: unknown) => isBangerError(e, ErrorCode.Timeout) && /within 0 s/.test((e as Error).message),
  );
  const plainMs = Date.now() - t0;

  const extended = deadSsh();
  const t1 = Date.now();
  await assert.rejects(
    waitForSsh(extended.exec, paths, '172.16.0.2', { timeoutMs: 300, probe, watch: async () => 1600 }),
    (e: unknown) => isBangerError(e, ErrorCode.Timeout) && /within 2 s/.test((e as Error).message),
  );
  assert.ok(
    Date.now() - t1 >= 1600 && extended.calls() > plain.calls(),
    `extended wait (${Date.now() - t1} ms, ${extended.calls()} tries) vs plain (${plainMs} ms, ${plain.calls()} tries)`,
  );

  const failing = deadSsh();
  let round = 0;
  await assert.rejects(
    waitForSsh(failing.exec, paths, '172.16.0.2', {
      timeoutMs: 60_000,
      probe,
      watch: async () => {
        if (++round === 3) throw new Error('step first-boot: apt-get failed');
        return undefined;
      },
    }),
    /step first-boot: apt-get failed/,
  );
  assert.equal(failing.calls(), 2);
});

test('waitForSsh: no ssh is spawned until the probe sees an SSH banner', async () => {
  const ssh = deadSsh();
  let probes = 0;
  const closed = async () => (probes++, false);
  await assert.rejects(
    waitForSsh(ssh.exec, paths, '172.16.0.2', { timeoutMs: 700, probe: closed }),
    (e: unknown) => isBangerError(e, ErrorCode.Timeout) && /port 22 not answering yet/.test((e as Error).message),
  );
  assert.equal(ssh.calls(), 0);
  assert.ok(probes >= 3, `${probes} probes`);
});

test('sshBanner: true only for a listener that greets with SSH- (loopback only)', async () => {
  const { createServer } = await import('node:net');
  const serve = (greeting: string) =>
    new Promise<{ port: number; close: () => void }>((resolve) => {
      const srv = createServer((s) => s.end(greeting)).listen(0, '127.0.0.1', () =>
        resolve({ port: (srv.address() as { port: number }).port, close: () => srv.close() }),
      );
    });
  const ssh = await serve('SSH-2.0-OpenSSH_9.2\r\n');
  const http = await serve('HTTP/1.1 400 Bad Request\r\n\r\n');
  try {
    assert.equal(await sshBanner('127.0.0.1', ssh.port, 1000), true);
    assert.equal(await sshBanner('127.0.0.1', http.port, 1000), false);
  } finally {
    ssh.close();
    http.close();
  }
  assert.equal(await sshBanner('127.0.0.1', ssh.port, 1000), false, 'a closed port');
  // A slow sshd (a loaded TCG guest) greets after the connect timeout: one connection waits for
  // it rather than hanging up and piling up pre-auth sshd children.
  let conns = 0;
  const slow = await new Promise<{ port: number; close: () => void }>((resolve) => {
    const srv = createServer((s) => (conns++, setTimeout(() => s.end('SSH-2.0-slow\r\n'), 1500))).listen(0, '127.0.0.1', () =>
      resolve({ port: (srv.address() as { port: number }).port, close: () => srv.close() }),
    );
  });
  try {
    assert.equal(await sshBanner('127.0.0.1', slow.port, 1000), true);
    assert.equal(conns, 1);
  } finally {
    slow.close();
  }
});

test('installProgress: the latest install line from the console (apt, the script), escapes stripped, trimmed', async () => {
  const { installProgress } = await import('../../src/vms/readiness.js');
  assert.equal(installProgress('[    1.0] kernel line\nsome noise\n'), undefined);
  const text =
    'banger-first-boot: step install: systemd is missing (at 3.1 s)\nGet:1 http://10.0.0.1/debian bookworm/main amd64 libc6 2.36\nUnpacking libc6 (2.36-9) ...\r\nSetting up \x1b[1msystemd\x1b[0m (252.38-1~deb12u1) ...\nother output\n';
  assert.equal(installProgress(text), 'Setting up systemd (252.38-1~deb12u1) ...');
  assert.equal(installProgress(`Unpacking ${'x'.repeat(200)}\n`)!.length, 100);
});

test('LineSplitter: a line longer than MAX_LINE is cut there, the rest of it dropped; lines across chunks and UTF-8 split between chunks', async () => {
  const { LineSplitter, MAX_LINE } = await import('../../src/vms/console.js');
  const lines: string[] = [];
  const s = new LineSplitter((l) => lines.push(l));
  s.push('a'.repeat(3 * MAX_LINE));
  s.push(Buffer.from('b'.repeat(MAX_LINE) + '\nbanger-first-boot: error: x\nhalf'));
  const euro = Buffer.from('€\n');
  s.push(euro.subarray(0, 1));
  s.push(euro.subarray(1));
  s.push('tail');
  s.end();
  assert.deepEqual(lines, ['a'.repeat(MAX_LINE), 'banger-first-boot: error: x', 'half€', 'tail']);
});

test('BootWatch: init marker, first error and its hint, install state, progress; CRLF lines', async () => {
  const { BootWatch } = await import('../../src/vms/console.js');
  const w = new BootWatch();
  for (const l of [
    '[ 1.0] Run /init as init process\r',
    'banger-first-boot: step install\r',
    'Setting up systemd (252) ...\r',
    'banger-first-boot: error: first\r',
    'banger-first-boot: hint: h1\r',
    'banger-first-boot: error: second',
  ])
    w.line(l);
  assert.equal(w.init, true);
  assert.deepEqual(w.firstBoot(), { installing: true, error: 'first', hint: 'h1' });
  assert.equal(w.progress, 'Setting up systemd (252) ...');
});

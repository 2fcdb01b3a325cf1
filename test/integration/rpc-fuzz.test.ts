import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TestDaemon } from '../helpers/daemon.js';
import { cleanupAll, createNetns } from '../helpers/netns.js';
import { RawConn, fuzzLines, killerMessages } from '../helpers/rawrpc.js';

after(() => cleanupAll());

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

/** Time for a fresh client to get `daemon status` (ms); fails if the daemon does not answer. */
async function answerMs(d: TestDaemon): Promise<number> {
  const t0 = Date.now();
  const c = await d.client();
  try {
    const st = await c.request('daemon.status', {});
    assert.equal(st.pid, d.proc!.pid);
  } finally {
    c.close();
  }
  return Date.now() - t0;
}

test('real bangerd: killer messages, thousands of fuzzed ones, a 50 MB line and 100k unread requests neither stop it nor grow it', async () => {
  const d = new TestDaemon({ netns: createNetns('fuzz') });
  try {
    await d.start();
    const pid = d.proc!.pid!;
    await answerMs(d);
    const base = rssMiB(pid);
    // The slowest of a few fresh-client answers on the idle daemon: the yardstick for "still
    // answering promptly" under attack below (a bound relative to it, not a fixed wall clock).
    let idleMs = 0;
    for (let i = 0; i < 5; i++) idleMs = Math.max(idleMs, await answerMs(d));
    const report: Record<string, number> = { baseRssMiB: Math.round(base), idleAnswerMs: idleMs };

    // 1. The messages that killed it, on one connection, then fuzz on another.
    const raw = await RawConn.open(d.socket);
    for (const k of killerMessages()) raw.send(k.line + '\n');
    const probe = await raw.request('{"jsonrpc":"2.0","id":"after-killers","method":"daemon.status"}', 'after-killers');
    assert.equal(probe.result?.pid, pid);
    assert.ok(raw.lines.every((l) => l.id === null || typeof l.id === 'string' || typeof l.id === 'number'));
    raw.close();
    const fz = await RawConn.open(d.socket);
    fz.send(fuzzLines(5000, 20261202).join('\n') + '\n');
    const probe2 = await fz.request('{"jsonrpc":"2.0","id":"after-fuzz","method":"daemon.status"}', 'after-fuzz', 60000);
    assert.equal(probe2.result?.pid, pid);
    report.fuzzReplies = fz.lines.length;
    fz.close();
    await answerMs(d);

    // 2. A 50 MB line: refused after 4 MiB, other clients keep being served meanwhile.
    const big = await RawConn.open(d.socket);
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    big.send('{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{"x":"');
    let sent = 0;
    let midLine = () => {};
    const midLineP = new Promise<void>((r) => (midLine = r));
    const writer = (async () => {
      for (let i = 0; i < 50 && !big.closed; i++) {
        if (!big.sock.write(chunk))
          await new Promise((r) => {
            big.sock.once('drain', r);
            big.sock.once('close', r);
          });
        sent += chunk.length;
        if (sent >= 2 * chunk.length) midLine(); // the daemon holds megabytes of an unfinished line
      }
      midLine();
    })();
    await midLineP;
    report.answerDuringBigLineMs = await answerMs(d);
    await big.until(() => big.closed, 30000, 'big line refused');
    await writer;
    assert.equal(big.lines[0]?.error?.code, -32600);
    assert.ok(sent <= 50 * 1024 * 1024);
    report.rssAfterBigLineMiB = Math.round(rssMiB(pid));

    // 3. 100k requests from a client that never reads its replies.
    const lazy = await RawConn.open(d.socket);
    lazy.sock.pause();
    const req = (i: number) => `{"jsonrpc":"2.0","id":${i},"method":"daemon.status"}\n`;
    let batch = '';
    for (let i = 0; i < 100_000; i++) {
      batch += req(i);
      if (batch.length > 256 * 1024) {
        lazy.sock.write(batch);
        batch = '';
      }
    }
    lazy.sock.write(batch);
    // Wait for the event itself: the daemon stops taking this client's requests (its replies
    // fill the socket; it pauses reading), so the client's unsent bytes stop going down.
    let last = -1;
    for (let still = 0; still < 5; ) {
      await new Promise((r) => setTimeout(r, 100));
      const now = lazy.sock.writableLength;
      still = now === last && now > 0 ? still + 1 : 0;
      last = now;
    }
    report.floodBytesUnsent = last;
    report.answerDuringFloodMs = await answerMs(d);
    report.rssDuringFloodMiB = Math.round(rssMiB(pid));
    lazy.close();
    report.answerAfterMs = await answerMs(d);
    report.rssEndMiB = Math.round(rssMiB(pid));
    console.log('rpc-fuzz', JSON.stringify(report));

    for (const k of ['answerDuringBigLineMs', 'answerDuringFloodMs']) {
      assert.ok(report[k]! < 50 * idleMs, `${k} ${report[k]} ms, 50x the idle daemon's slowest answer (${idleMs} ms) or more: the attack held the daemon up`);
    }
    for (const k of ['rssAfterBigLineMiB', 'rssDuringFloodMiB', 'rssEndMiB']) {
      assert.ok(report[k]! < base + 150, `${k} ${report[k]} MiB vs base ${Math.round(base)} MiB`);
    }
    assert.equal(d.proc!.exitCode, null, 'the daemon is still running');
  } finally {
    await d.cleanup();
  }
});

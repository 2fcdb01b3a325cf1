import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nullLogger } from '../../src/core/log.js';
import { CLOCK_RESYNC_MS, syncGuestClock } from '../../src/vms/agent-clock.js';
import type { AgentConnection } from '../../src/vms/agent-session.js';

/** A connection whose set-clock replies the test controls. */
function fakeConn(answer: (req: Record<string, unknown>) => Promise<Record<string, unknown>>) {
  const sent: Array<Record<string, unknown>> = [];
  const conn = { closed: false, label: 'agent t', request: (req: Record<string, unknown>) => (sent.push(req), answer(req)) };
  return { conn: conn as unknown as AgentConnection & { closed: boolean }, sent };
}
const settle = () => new Promise((r) => setImmediate(r));

test('syncGuestClock: first contact sets the clock with the host time; again only after CLOCK_RESYNC_MS; one request in flight', async () => {
  let now = 1_700_000_000_000;
  const { conn, sent } = fakeConn(async () => ({ ok: true, stepMs: -3000 }));
  syncGuestClock(conn, nullLogger, () => now);
  syncGuestClock(conn, nullLogger, () => now); // still in flight: not sent twice
  assert.deepEqual(sent, [{ op: 'set-clock', unixMs: now }]);
  await settle();
  now += CLOCK_RESYNC_MS - 1;
  syncGuestClock(conn, nullLogger, () => now);
  assert.equal(sent.length, 1, 'a contact within the interval sends nothing');
  now += 2;
  syncGuestClock(conn, nullLogger, () => now);
  assert.equal(sent.length, 2);
  assert.equal(sent[1]!.unixMs, now);
});

test('syncGuestClock: an agent that predates set-clock is not asked again; a timeout is retried on the next contact; a closed connection is left alone', async () => {
  let now = 1_700_000_000_000;
  const old = fakeConn(async () => ({ ok: false, error: 'unknown op' }));
  syncGuestClock(old.conn, nullLogger, () => now);
  await settle();
  now += 10 * CLOCK_RESYNC_MS;
  syncGuestClock(old.conn, nullLogger, () => now);
  assert.equal(old.sent.length, 1);

  const slow = fakeConn(async () => {
    throw new Error('no reply within 5000 ms');
  });
  syncGuestClock(slow.conn, nullLogger, () => now);
  await settle();
  syncGuestClock(slow.conn, nullLogger, () => now);
  assert.equal(slow.sent.length, 2, 'a set-clock that got no answer is sent again at the next contact');

  const gone = fakeConn(async () => ({ ok: true }));
  gone.conn.closed = true;
  syncGuestClock(gone.conn, nullLogger, () => now);
  assert.equal(gone.sent.length, 0);

  const throwing = {
    closed: false,
    label: 'x',
    request: () => {
      throw new Error('agent connection closed');
    },
  } as unknown as AgentConnection;
  assert.doesNotThrow(() => syncGuestClock(throwing, nullLogger, () => now));
});

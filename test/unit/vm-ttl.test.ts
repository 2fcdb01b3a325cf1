import { test } from 'node:test';
import assert from 'node:assert/strict';
import { durationProblem, durationSeconds, extendedDeadline, formatRemaining, MAX_DURATION_SECONDS } from '../../src/core/duration.js';
import { isBangerError } from '../../src/core/errors.js';
import { ConfigSchema } from '../../src/core/config.js';
import { methods } from '../../src/rpc/contract.js';
import { lifetimeOf, MAX_SLEEP_MS, schedule } from '../../src/vms/ttl.js';

/** Lifetimes (issue 24): durations parsed once, deadline math, and which VMs a sweep expires. */

test('durations: s m h d, combined largest first; anything else names the field', () => {
  for (const [v, s] of [
    ['30s', 30],
    ['10m', 600],
    ['2h', 7200],
    ['1d', 86400],
    ['1h30m', 5400],
    ['1d2h3m4s', 93784],
    ['366d', MAX_DURATION_SECONDS],
  ] as const) {
    assert.equal(durationSeconds('--ttl', v), s, v);
    assert.equal(durationProblem(v), undefined, v);
  }
  for (const v of ['', '10', 'm', '1.5h', '-1m', '10 m', '1m1h', '1h1h', '0s', '0m0s', '367d', '10M', 'ten minutes', '1w']) {
    try {
      durationSeconds('--ttl', v);
      assert.fail(`accepted ${JSON.stringify(v)}`);
    } catch (e) {
      assert.ok(isBangerError(e) && e.code === 'E_INVALID', String(e));
      assert.match((e as Error).message, /^--ttl: /, 'names the flag');
      assert.deepEqual((e as { details?: unknown }).details, { field: '--ttl' });
    }
  }
});

test('the contract parses ttl/by once (seconds or a string) and names the field', () => {
  const create = methods['vm.create'].params;
  assert.equal(create.parse({ image: 'i', ttl: '10m' }).ttl, 600);
  assert.equal(create.parse({ image: 'i', ttl: 90 }).ttl, 90);
  const bad = create.safeParse({ image: 'i', ttl: '10 minutes' });
  assert.ok(!bad.success);
  assert.deepEqual(bad.error.issues[0]!.path, ['ttl']);
  assert.match(bad.error.issues[0]!.message, /'10 minutes' is not a duration/);
  assert.ok(!create.safeParse({ image: 'i', ttl: 0 }).success);
  assert.ok(!create.safeParse({ image: 'i', onExpire: 'delete' }).success);
  assert.deepEqual(methods['vm.extend'].params.parse({ name: 'box', by: '1h' }), { name: 'box', by: 3600 });
});

test('config vm.ttl: none unless set, a bad one names the field; vm.onExpire defaults to stop', () => {
  const d = ConfigSchema.parse({});
  assert.equal(d.vm.ttl, undefined);
  assert.equal(d.vm.onExpire, 'stop');
  assert.equal(ConfigSchema.parse({ vm: { ttl: '2h', onExpire: 'rm' } }).vm.ttl, '2h');
  const bad = ConfigSchema.safeParse({ vm: { ttl: '2 hours' } });
  assert.ok(!bad.success);
  assert.deepEqual(bad.error.issues[0]!.path, ['vm', 'ttl']);
});

test('lifetimeOf: the create wins over the config; --on-expire without any ttl is an error naming it', () => {
  assert.equal(lifetimeOf({ onExpire: 'stop' }, {}), undefined);
  assert.deepEqual(lifetimeOf({ onExpire: 'stop' }, { ttl: 5 }), { seconds: 5, onExpire: 'stop' });
  assert.deepEqual(lifetimeOf({ ttl: '1h', onExpire: 'rm' }, {}), { seconds: 3600, onExpire: 'rm' });
  assert.deepEqual(lifetimeOf({ ttl: '1h', onExpire: 'rm' }, { ttl: 60, onExpire: 'stop' }), { seconds: 60, onExpire: 'stop' });
  assert.throws(
    () => lifetimeOf({ onExpire: 'stop' }, { onExpire: 'rm' }),
    (e: unknown) => isBangerError(e) && e.code === 'E_INVALID' && /--on-expire needs a lifetime/.test(e.message),
  );
});

test('extendedDeadline: from the deadline while it is ahead, from now when none or past', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  assert.equal(extendedDeadline('2030-01-01T00:10:00.000Z', 600, now), '2030-01-01T00:20:00.000Z');
  assert.equal(extendedDeadline('2029-12-31T00:00:00.000Z', 600, now), '2030-01-01T00:10:00.000Z');
  assert.equal(extendedDeadline(null, 60, now), '2030-01-01T00:01:00.000Z');
});

test('formatRemaining', () => {
  assert.deepEqual([0, -5, 1, 45_000, 59_001, 60_000, 552_000, 3_600_000, 11_100_000, 86_400_000 * 2 + 3_600_000 * 4].map(formatRemaining), [
    'expired',
    'expired',
    '1s',
    '45s',
    '1m00s',
    '1m00s',
    '9m12s',
    '1h00m',
    '3h05m',
    '2d4h',
  ]);
});

test('schedule: due at or past the deadline; unfinished creates and VMs without one skipped; next wake capped; retries wait', () => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  const at = (s: number) => new Date(now + s * 1000).toISOString();
  const vms = [
    { name: 'past', expiresAt: at(-100), createDone: true },
    { name: 'now', expiresAt: at(0), createDone: true },
    { name: 'soon', expiresAt: at(30), createDone: true },
    { name: 'later', expiresAt: at(90), createDone: true },
    { name: 'none', expiresAt: null, createDone: true },
    { name: 'creating', expiresAt: at(-1), createDone: false },
  ];
  assert.deepEqual(schedule(vms, now), { due: ['past', 'now'], nextInMs: 30_000 });
  assert.deepEqual(schedule(vms, now, new Map([['past', now + 10_000]])), { due: ['now'], nextInMs: 10_000 });
  assert.deepEqual(schedule([{ name: 'far', expiresAt: at(30 * 86400), createDone: true }], now), { due: [], nextInMs: MAX_SLEEP_MS });
  assert.deepEqual(schedule([vms[4]!], now), { due: [], nextInMs: undefined });
});

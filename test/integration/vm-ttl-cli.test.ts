import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { isRoot, missingTools, type TestDaemon } from '../helpers/daemon.js';
import { startFirecrackerCli, type FirecrackerCliFixture } from '../helpers/firecracker-cli-fixture.js';
import { bridgeInstance, leftovers, processesWith } from '../helpers/vm-leftovers.js';

/**
 * Lifetimes (issue 24) through the built CLI against an isolated daemon (own network namespace)
 * whose Firecracker is the test stand-in: `--ttl` with `--on-expire rm` and `stop`, `vm extend`,
 * and deadlines kept across a daemon SIGKILL (one that passed while no daemon ran is handled at
 * start, one still ahead is scheduled again). Every wait is for an event (the VM gone or
 * stopped, seen through `vm list`), with a generous deadline; nothing asserts a duration.
 */
const skip = !isRoot() ? 'needs root (namespaces, taps, nft)' : missingTools('ip', 'nft', 'mkfs.ext4', 'debugfs', 'ssh-keygen');
let fx: FirecrackerCliFixture | undefined;
let d: TestDaemon;
let ns = '';

before(
  async () => {
    if (skip) return;
    fx = await startFirecrackerCli({ tag: 'ttlcli', bridge: 'bgttl0', subnet: '10.93.0.0/24' });
    ({ d, ns } = fx);
  },
  { timeout: 600_000 },
);

after(
  async () => {
    await fx?.stop();
  },
  { timeout: 120_000 },
);

const create = async (name: string, ...flags: string[]) => {
  const r = await d.cli(['--json', 'vm', 'create', '--image', 'fcimg', '--name', name, '--vmm', 'firecracker', '--no-wait', ...flags], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { name: string; expiresAt: string | null; onExpire: string | null; createdAt: string; running: boolean };
};
const listed = async () =>
  new Map((await d.json<{ name: string; running: boolean; state: string; expiresAt: string | null }[]>(['vm', 'list'])).map((v) => [v.name, v]));

/** Poll `vm list` until `ok` holds (the reaper acted); fails with what was last seen after `ms`. */
async function until(what: string, ok: (vms: Awaited<ReturnType<typeof listed>>) => boolean, ms = 90_000): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    const vms = await listed();
    if (ok(vms)) return;
    last = [...vms.values()].map((v) => `${v.name}:${v.state}:${v.expiresAt}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.fail(`${what}: not seen within ${ms / 1000} s (last vm list: ${JSON.stringify(last)})`);
}

function nothingLeft(name: string): void {
  const instance = bridgeInstance(ns, 'bgttl0');
  const found = leftovers(ns, d.root, instance, name);
  for (const pid of processesWith(`bg-${instance}-`))
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`/vms/${name}/`)) found.push(`firecracker process ${pid}`);
  assert.deepEqual(found, [], `left behind by ${name}`);
}

test('--ttl 5s --on-expire rm: the deadline is in the create result, then the VM is removed with everything it made', { skip, timeout: 300_000 }, async () => {
  const v = await create('ttl-rm', '--ttl', '5s', '--on-expire', 'rm');
  assert.equal(v.onExpire, 'rm');
  const left = Date.parse(v.expiresAt!) - Date.parse(v.createdAt);
  assert.ok(left >= 4000 && left <= 6000, `deadline is 5 s after the record: ${v.createdAt} → ${v.expiresAt}`);
  await until('ttl-rm removed', (vms) => !vms.has('ttl-rm'));
  nothingLeft('ttl-rm');
});

test('--on-expire stop: the VM is stopped, kept, and its deadline cleared; ps and show report the lifetime', { skip, timeout: 300_000 }, async () => {
  const v = await create('ttl-stop', '--ttl', '1d', '--on-expire', 'stop');
  const ps = await d.cli(['ps']);
  assert.match(ps.stdout, /TTL/);
  assert.match(ps.stdout, /ttl-stop .* (23h59m|1d0h) stop/);
  const show = await d.cli(['vm', 'show', 'ttl-stop']);
  assert.match(show.stdout, new RegExp(`expires: +${v.expiresAt!.replace(/\./g, '\\.')} \\((23h59m|1d0h) stop\\)`));
  const bad = await d.cli(['vm', 'extend', 'ttl-stop', '5 s']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /'5 s' is not a duration/);
  await d.cli(['vm', 'rm', '-f', 'ttl-stop']);
  await create('ttl-stop', '--ttl', '5s', '--on-expire', 'stop');
  await until('ttl-stop stopped', (vms) => vms.get('ttl-stop')?.running === false);
  const after = await d.json(['vm', 'show', 'ttl-stop']);
  assert.deepEqual([after.state, after.running, after.expiresAt, after.onExpire], ['stopped', false, null, null]);
  const rm = await d.cli(['vm', 'rm', 'ttl-stop']);
  assert.equal(rm.code, 0, rm.stderr);
  nothingLeft('ttl-stop');
});

test('vm extend pushes the deadline out: a VM with a later deadline expires first', { skip, timeout: 300_000 }, async () => {
  const ext = await create('ttl-ext', '--ttl', '4s', '--on-expire', 'rm');
  const r = await d.cli(['--json', 'vm', 'extend', 'ttl-ext', '10m']);
  assert.equal(r.code, 0, r.stderr);
  const extended = JSON.parse(r.stdout);
  assert.equal(Date.parse(extended.expiresAt) - Date.parse(ext.expiresAt!), 600_000, 'from the old deadline, which was still ahead');
  assert.equal(extended.onExpire, 'rm');
  // ttl-ref's deadline comes after ttl-ext's original one: once the reaper removed ttl-ref, it
  // has been past ttl-ext's original deadline too.
  const ref = await create('ttl-ref', '--ttl', '4s', '--on-expire', 'rm');
  assert.ok(Date.parse(ref.expiresAt!) > Date.parse(ext.expiresAt!));
  await until('ttl-ref removed', (vms) => !vms.has('ttl-ref'));
  const still = (await listed()).get('ttl-ext');
  assert.ok(still, 'the extended VM is still there');
  assert.equal(still.expiresAt, extended.expiresAt);
  // an --on-expire without a lifetime is refused, naming the flag
  const noTtl = await d.cli(['vm', 'create', '--image', 'fcimg', '--name', 'ttl-none', '--vmm', 'firecracker', '--no-start', '--on-expire', 'rm']);
  assert.notEqual(noTtl.code, 0);
  assert.match(noTtl.stderr, /--on-expire needs a lifetime/);
  const badTtl = await d.cli(['vm', 'create', '--image', 'fcimg', '--name', 'ttl-none', '--no-start', '--ttl', '10 min']);
  assert.notEqual(badTtl.code, 0);
  assert.match(badTtl.stderr, /--ttl: '10 min' is not a duration/);
  assert.ok(!(await listed()).has('ttl-none'));
  assert.equal((await d.cli(['vm', 'rm', '-f', 'ttl-ext'])).code, 0);
  nothingLeft('ttl-ext');
});

test('deadlines survive a daemon SIGKILL: one passed while no daemon ran goes at start, one ahead is kept', { skip, timeout: 300_000 }, async () => {
  const ahead = await create('ttl-ahead', '--ttl', '60s', '--on-expire', 'rm');
  const past = await create('ttl-past', '--ttl', '15s', '--on-expire', 'rm');
  await d.kill();
  // the daemon died before ttl-past's deadline (else this test would prove nothing about restarts)
  assert.ok(Date.now() < Date.parse(past.expiresAt!), 'ttl-past still ahead when the daemon was killed');
  // wait (with no daemon) until ttl-past's deadline is behind us: the restart must find it expired
  await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(past.expiresAt!) - Date.now() + 1000)));
  assert.ok(Date.now() < Date.parse(ahead.expiresAt!), 'ttl-ahead is still ahead at restart');
  await d.start();
  await until('ttl-past removed after the restart', (vms) => !vms.has('ttl-past'));
  nothingLeft('ttl-past');
  // the start-up sweep took only what was due (checked only while ttl-ahead is clearly ahead)
  const seen = (await listed()).get('ttl-ahead');
  if (Date.now() < Date.parse(ahead.expiresAt!) - 2000) assert.equal(seen?.running, true, 'ttl-ahead kept and adopted');
  await until('ttl-ahead removed after its deadline', (vms) => !vms.has('ttl-ahead'));
  nothingLeft('ttl-ahead');
});

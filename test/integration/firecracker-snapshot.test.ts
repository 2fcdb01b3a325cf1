import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { AgentConnection } from '../../src/vms/agent-session.js';
import { FirecrackerApi } from '../../src/vms/drivers/firecracker/api.js';
import { FirecrackerDriver } from '../../src/vms/drivers/firecracker/driver.js';
import { fcFiles } from '../../src/vms/drivers/firecracker/files.js';
import { findFirecracker } from '../../src/vms/drivers/firecracker/process.js';
import type { LaunchSpec, SnapshotFiles } from '../../src/vms/drivers/types.js';
import { snapshotFiles, vmFiles } from '../../src/vms/files.js';
import { isRoot } from '../helpers/daemon.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';
import { loadSpec, type SpecVersion } from '../helpers/firecracker-spec.js';
import { createNetns, deleteNetns } from '../helpers/netns.js';

/**
 * The Firecracker driver's snapshots (driver.snapshots: save / restore / fingerprint / check)
 * against the test STAND-IN for Firecracker, run inside a network namespace this test creates
 * (its taps exist only there: the stand-in opens a tap as Firecracker does, by name). For each
 * shipped spec (the stand-in reports that release and validates every request against its
 * spec; the request log is validated again here): the order pause → create → resume and
 * load → resume, the files made and removed on failure, overrides used only where the spec has
 * them, and every refusal made before any process starts.
 */
const skip = isRoot() ? undefined : 'needs root (network namespace, taps)';
const RELEASES: Array<[string, SpecVersion]> = [
  ['1.5.0', 'v1.5.0'],
  ['1.16.1', 'v1.16.1'],
  ['1.17.0', 'main-1.17.0-dev'],
];
let root = '';
let ns = '';
let standin: ReturnType<typeof makeStandin>;
let driver: FirecrackerDriver;
let wrapper = '';
const reqLog = () => join(root, 'requests.jsonl');

before(() => {
  if (skip) return;
  root = mkdtempSync(join(tmpdir(), 'banger-fcsnap-'));
  chmodSync(root, 0o755);
  standin = makeStandin();
  ns = createNetns('fcsnap');
  for (const tap of ['fcsnapa', 'fcsnapb']) {
    assert.equal(spawnSync('ip', ['netns', 'exec', ns, 'ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap']).status, 0);
  }
  // The stand-in runs in the namespace (ip netns exec mounts its /sys/class/net), pid unchanged.
  wrapper = join(root, 'firecracker');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${ns}' '${standin.binary}' "$@"\n`);
  chmodSync(wrapper, 0o755);
  driver = new FirecrackerDriver(exec, { firecracker: wrapper });
});
after(async () => {
  if (skip) return;
  // Each VM's own process, found by its pid file and API socket (nothing else is signalled).
  for (const d of ['a', 'b', 'c']) await driver.kill({ id: d, name: d, files: vmFiles(join(root, d)) }).catch(() => undefined);
  deleteNetns(ns);
  standin.remove();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
/** A VM directory with a kernel, a root and a seed disk, and its LaunchSpec on `tap`. */
function vm(name: string, tap: string, o: { rootFrom?: string; vcpu?: number; memoryMiB?: number } = {}): LaunchSpec {
  const dir = join(root, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files = vmFiles(dir);
  if (!existsSync(join(root, 'vmlinux'))) writeFileSync(join(root, 'vmlinux'), 'ELF stand-in kernel');
  if (o.rootFrom) copyFileSync(o.rootFrom, files.rootRaw);
  else writeFileSync(files.rootRaw, `root disk of ${name}`);
  writeFileSync(files.seed, `seed of ${name}`);
  return {
    id: `${(0xa0 + n++).toString(16)}00beef`,
    instance: '0123456789ab',
    name,
    files,
    vcpu: o.vcpu ?? 1,
    memoryMiB: o.memoryMiB ?? 64,
    kernel: join(root, 'vmlinux'),
    kernelFormat: 'elf-vmlinux',
    cmdline: 'console=ttyS0',
    disks: [
      { id: 'root', path: files.rootRaw, format: 'raw' },
      { id: 'seed', path: files.seed, format: 'raw', readOnly: true },
    ],
    net: { tap, mac: '06:00:0a:00:00:02' },
    kvm: true,
  };
}

// biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
const RESUME = { then: 'resume' } as const;
// biome-ignore lint/suspicious/noThenProperty: the VmSnapshots.save option (a string, not a thenable)
const EXIT = { then: 'exit' } as const;
const handle = (s: LaunchSpec) => ({ id: s.id, name: s.name, files: s.files });
function requests(): { method: string; path: string; body?: Record<string, unknown>; status: number }[] {
  return existsSync(reqLog())
    ? readFileSync(reqLog(), 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    : [];
}
/** The requests since the log was last cleared, as "METHOD path", each body validated against `version`'s spec. */
function sequence(version: SpecVersion): string[] {
  const spec = loadSpec(version);
  return requests().map((r) => {
    const route = spec.route(r.method, r.path);
    assert.ok(route, `${version}: ${r.method} ${r.path} is not in the spec`);
    if (route.bodyDefinition) {
      const v = spec.validator(route.bodyDefinition);
      assert.ok(v(r.body), `${version}: ${r.method} ${r.path} ${JSON.stringify(r.body)} → ${JSON.stringify(v.errors)}`);
    }
    assert.ok(r.status < 300, `${r.method} ${r.path} answered ${r.status}`);
    return `${r.method} ${r.path}${r.path === '/vm' ? ` ${String(r.body?.state)}` : ''}`;
  });
}
const clearLog = () => rmSync(reqLog(), { force: true });
const knobs = (version: string, extra: Record<string, string> = {}) =>
  standin.setKnobs({ FC_STANDIN_VERSION: version, FC_STANDIN_REQUEST_LOG: reqLog(), ...extra });
const state = async (s: LaunchSpec) => (await new FirecrackerApi(fcFiles(s.files.dir).api).instanceInfo()).state;
const snapDir = (name: string): SnapshotFiles => snapshotFiles(join(root, `snap-${name}`));
const present = (f: SnapshotFiles) => [f.state, f.memory, f.disk, f.meta].filter((p) => existsSync(p));

for (const [release, version] of RELEASES) {
  test(`Firecracker ${release}: save is pause → create → resume (spec ${version}); restore is load → (drives) → resume; overrides only where the spec has them`, {
    skip,
  }, async () => {
    knobs(release);
    // A driver per release: it reads its binary's version once (as the daemon's driver does).
    const driver = new FirecrackerDriver(exec, { firecracker: wrapper });
    const a = vm('a', 'fcsnapa');
    const { pid } = await driver.launch(a);
    clearLog();
    const to = snapDir(`${release}-a`);
    rmSync(to.dir, { recursive: true, force: true });
    const meta = await driver.snapshots.save(handle(a), a, to, RESUME);
    assert.deepEqual(sequence(version), ['GET /', 'PATCH /vm Paused', 'PUT /snapshot/create', 'PATCH /vm Resumed']);
    assert.equal(await state(a), 'Running', 'the source runs on');
    assert.deepEqual(present(to), [to.state, to.memory, to.disk, to.meta]);
    assert.equal(meta.vmm, 'firecracker');
    assert.equal(meta.vmmVersion, release);
    assert.equal(meta.bytes.memory, 64 * 1024 * 1024, 'the memory file is the guest RAM');
    assert.equal(readFileSync(to.disk, 'utf8'), 'root disk of a', 'the root disk travels with the state');
    assert.equal(statSync(to.meta).mode & 0o777, 0o600);

    // Restore into another VM: its own tap, vsock socket and disks.
    const b = vm('b', 'fcsnapb', { rootFrom: to.disk });
    clearLog();
    if (version === 'v1.5.0') {
      await assert.rejects(
        driver.snapshots.restore(b, to),
        (e: unknown) => isBangerError(e, 'E_CONFLICT') && /network_overrides arrived in 1\.12/.test(e.message),
      );
      assert.deepEqual(requests(), [], 'refused before any process started');
      assert.equal(existsSync(fcFiles(b.files.dir).api), false);
      // The same VM (a pause): no override needed.
      clearLog();
      const same = snapDir(`${release}-pause`);
      rmSync(same.dir, { recursive: true, force: true });
      await driver.snapshots.save(handle(a), a, same, { ...EXIT, keepDisk: true });
      assert.deepEqual(sequence(version), ['GET /', 'PATCH /vm Paused', 'PUT /snapshot/create']);
      assert.equal(await findFirecracker(fcFiles(a.files.dir)), undefined, "then: 'exit' ends the process");
      assert.equal(existsSync(same.disk), false, 'keepDisk: no copy');
      clearLog();
      const back = await driver.snapshots.restore(a, same);
      assert.notEqual(back.pid, pid);
      assert.deepEqual(sequence(version), ['GET /', 'PUT /logger', 'PUT /metrics', 'PUT /snapshot/load', 'PATCH /vm Resumed']);
      const load = requests()[3]!.body!;
      assert.deepEqual(Object.keys(load).sort(), ['mem_backend', 'resume_vm', 'snapshot_path']);
      assert.equal(await state(a), 'Running');
      await driver.kill(handle(a));
      return;
    }
    const { pid: pidB } = await driver.snapshots.restore(b, to);
    assert.deepEqual(sequence(version), [
      'GET /',
      'PUT /logger',
      'PUT /metrics',
      'PUT /snapshot/load',
      'PATCH /drives/root',
      'PATCH /drives/seed',
      'PATCH /vm Resumed',
    ]);
    const load = requests()[3]!.body!;
    assert.deepEqual(load, {
      snapshot_path: to.state,
      mem_backend: { backend_type: 'File', backend_path: to.memory },
      resume_vm: false,
      network_overrides: [{ iface_id: 'eth0', host_dev_name: 'fcsnapb' }],
      vsock_override: { uds_path: fcFiles(b.files.dir).vsock },
    });
    assert.deepEqual(requests()[4]!.body, { drive_id: 'root', path_on_host: b.files.rootRaw });
    assert.equal(await state(b), 'Running');
    assert.deepEqual(await driver.status(handle(b)), { running: true, pid: pidB });
    // The agent answers at b's own vsock socket (the real agent behind the stand-in).
    const conn = await AgentConnection.open(await driver.openAgentStream(handle(b), { timeoutMs: 5000 }), 'b', 5000, nullLogger);
    assert.equal((await conn.request({ op: 'health' })).ok, true);
    conn.close();
    await driver.kill(handle(b));
    await driver.kill(handle(a));
  });
}

test('a failed create removes every file it made and the guest runs on; a failed load leaves no process', { skip }, async () => {
  knobs('1.16.1', { FC_STANDIN_FAIL_PATH: '/snapshot/create' });
  const a = vm('a', 'fcsnapa');
  await driver.launch(a);
  const to = snapDir('fail');
  rmSync(to.dir, { recursive: true, force: true });
  clearLog();
  await assert.rejects(driver.snapshots.save(handle(a), a, to, EXIT), (e: unknown) => isBangerError(e, 'E_VMM') && /snapshot-create/.test(e.message));
  assert.deepEqual(present(to), []);
  assert.deepEqual(
    requests().map((r) => `${r.method} ${r.path} ${r.status}`),
    ['GET / 200', 'PATCH /vm 204', 'PUT /snapshot/create 400', 'PATCH /vm 204'],
  );
  assert.equal(await state(a), 'Running', 'resumed after the failure, even with then: exit');
  await driver.kill(handle(a));
  knobs('1.16.1'); // the stand-in reads its knobs when it starts
  await driver.launch(a);
  // A failure after Firecracker wrote its files (the root disk cannot be copied): they go too.
  renameSync(a.files.rootRaw, `${a.files.rootRaw}.away`);
  clearLog();
  await assert.rejects(driver.snapshots.save(handle(a), a, to, EXIT), (e: unknown) => isBangerError(e, 'E_NOT_FOUND'));
  assert.deepEqual(
    requests().map((r) => `${r.method} ${r.path} ${r.status}`),
    ['GET / 200', 'PATCH /vm 204', 'PUT /snapshot/create 204', 'PATCH /vm 204'],
  );
  assert.deepEqual(present(to), [], 'the vmstate and memory file Firecracker wrote are removed');
  assert.equal(await state(a), 'Running');
  renameSync(`${a.files.rootRaw}.away`, a.files.rootRaw);
  await driver.snapshots.save(handle(a), a, to, EXIT);
  assert.equal(await findFirecracker(fcFiles(a.files.dir)), undefined);

  knobs('1.16.1', { FC_STANDIN_FAIL_PATH: '/snapshot/load' });
  const c = vm('c', 'fcsnapb', { rootFrom: to.disk });
  await assert.rejects(driver.snapshots.restore(c, to), (e: unknown) => isBangerError(e, 'E_CONFLICT') && /did not load/.test(e.message));
  const cf = fcFiles(c.files.dir);
  assert.equal(await findFirecracker(cf), undefined, 'no process left');
  assert.deepEqual(
    [cf.api, cf.vsock, cf.pid].filter((p) => existsSync(p)),
    [],
    'its socket and pid file removed',
  );
  assert.deepEqual(present(to), [to.state, to.memory, to.disk, to.meta], 'the snapshot itself is kept');
});

test('refused before anything starts: another shape, another kernel, another Firecracker, a damaged or incomplete state, a jailed VM', { skip }, async () => {
  knobs('1.16.1');
  const a = vm('a', 'fcsnapa');
  await driver.launch(a);
  const to = snapDir('refuse');
  rmSync(to.dir, { recursive: true, force: true });
  await driver.snapshots.save(handle(a), a, to, EXIT);
  const c = () => vm('c', 'fcsnapb', { rootFrom: to.disk });
  clearLog();
  const refused = async (spec: LaunchSpec, re: RegExp, from = to) => {
    await assert.rejects(driver.snapshots.restore(spec, from), (e: unknown) => isBangerError(e, 'E_CONFLICT') && re.test(e.message));
    assert.deepEqual(requests(), [], `${re}: no Firecracker was started`);
    assert.equal(existsSync(fcFiles(spec.files.dir).api), false);
  };
  await refused({ ...c(), vcpu: 2 }, /has 1 vCPU and 64 MiB; asked for 2 vCPU/);
  await refused({ ...c(), memoryMiB: 128 }, /asked for 1 vCPU and 128 MiB/);
  const otherKernel = join(root, 'vmlinux-2');
  writeFileSync(otherKernel, 'another kernel');
  await refused({ ...c(), kernel: otherKernel }, /the machine differs/);
  const fp = await driver.snapshots.fingerprint(c());
  assert.equal(fp.vmmVersion, '1.16.1');
  assert.notEqual((await driver.snapshots.fingerprint({ ...c(), kernel: otherKernel })).fingerprint, fp.fingerprint);
  assert.equal(
    (await driver.snapshots.fingerprint({ ...c(), net: { tap: 'x', mac: '06:00:00:00:00:09' } })).fingerprint,
    fp.fingerprint,
    'tap and MAC are not shape',
  );

  // Another Firecracker release (a fresh driver: the version is read per binary).
  knobs('1.17.0');
  const d2 = new FirecrackerDriver(exec, { firecracker: wrapper });
  await assert.rejects(
    d2.snapshots.restore(c(), to),
    (e: unknown) => isBangerError(e, 'E_CONFLICT') && /made by Firecracker v1\.16\.1; this host runs Firecracker v1\.17\.0/.test(e.message),
  );
  knobs('1.16.1');

  // A damaged state (same size, one byte changed), a missing memory file, no snapshot.json.
  const damaged = snapDir('damaged');
  rmSync(damaged.dir, { recursive: true, force: true });
  spawnSync('cp', ['-a', to.dir, damaged.dir]);
  const bytes = readFileSync(damaged.state);
  bytes[5] = bytes[5]! ^ 1;
  writeFileSync(damaged.state, bytes);
  await refused(c(), /state file is damaged \(sha256 differs\)/, damaged);
  rmSync(damaged.memory);
  await refused(c(), /memory file is missing/, damaged);
  rmSync(damaged.meta);
  await refused(c(), /no snapshot\.json/, damaged);

  // A jailed VM is not snapshotted (check says why).
  const jailed = new FirecrackerDriver(exec, { firecracker: wrapper, jailer: {} as never });
  assert.match(String(jailed.snapshots.check(c())), /jailer/);
  assert.equal(driver.snapshots.check(c()), undefined);
  assert.equal(driver.features.snapshots, true);
});

test('a Firecracker older than the snapshot API banger drives is refused by check, save and restore', { skip }, async () => {
  knobs('1.4.0');
  const old = new FirecrackerDriver(exec, { firecracker: wrapper });
  const a = vm('a', 'fcsnapa');
  assert.equal((await old.snapshots.fingerprint(a)).vmmVersion, '1.4.0');
  assert.match(String(old.snapshots.check(a)), /v1\.4\.0 is older than 1\.5/);
  const to = snapDir('old');
  await assert.rejects(old.snapshots.restore(a, to), (e: unknown) => isBangerError(e, 'E_CONFLICT') && /older than 1\.5/.test(e.message));
  await assert.rejects(old.snapshots.save(handle(a), a, to, RESUME), (e: unknown) => isBangerError(e, 'E_INVALID') && /older than 1\.5/.test(e.message));
});

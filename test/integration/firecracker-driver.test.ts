import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { detectCgroups } from '../../src/core/cgroup.js';
import { createGroup, groupName, procsFiles, removeGroup } from '../../src/core/cgroup-group.js';
import { realHost } from '../../src/core/host.js';
import { FirecrackerApi } from '../../src/vms/drivers/firecracker/api.js';
import { bootFirecracker } from '../../src/vms/drivers/firecracker/boot.js';
import { fcFiles } from '../../src/vms/drivers/firecracker/files.js';
import { findFirecracker, spawnFirecracker, stopFirecracker } from '../../src/vms/drivers/firecracker/process.js';
import type { FcBootConfig } from '../../src/vms/drivers/firecracker/requests.js';
import { connectHybridVsock } from '../../src/vms/drivers/firecracker/vsock.js';
import { runningNotZombie } from '../../src/vms/proc.js';
import { makeStandin } from '../helpers/firecracker-standin/index.js';

/**
 * The Firecracker driver's pieces (API client, boot steps with unwind, process lifecycle,
 * hybrid vsock) against the test STAND-IN for Firecracker (test/helpers/firecracker-standin),
 * which serves the v1.16.1 API contract and answers vsock port 1024 with the real guest agent.
 * No network: the stand-in is given no tap here (the CLI test covers the tap in a netns).
 */
const standin = makeStandin();
const root = mkdtempSync(join(tmpdir(), 'banger-fc-'));
after(() => {
  standin.remove();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
function vmDir(): { dir: string; files: ReturnType<typeof fcFiles>; console: string; config: FcBootConfig } {
  const dir = join(root, `vm${n++}`);
  mkdirSync(dir, { recursive: true });
  for (const f of ['vmlinux', 'root.ext4', 'seed.ext4']) writeFileSync(join(dir, f), 'x');
  const files = fcFiles(dir);
  return {
    dir,
    files,
    console: join(dir, 'console.log'),
    config: {
      vcpu: 1,
      memoryMiB: 256,
      kernel: join(dir, 'vmlinux'),
      bootArgs: 'console=ttyS0 reboot=k panic=1',
      disks: [
        { id: 'root', path: join(dir, 'root.ext4') },
        { id: 'seed', path: join(dir, 'seed.ext4'), readOnly: true },
      ],
      vsock: { cid: 3, udsPath: files.vsock },
      logPath: files.log,
      metricsPath: files.metrics,
    },
  };
}

function leftovers(v: ReturnType<typeof vmDir>): string[] {
  return [v.files.api, v.files.vsock, v.files.pid].filter((p) => existsSync(p));
}

test('boot through every step, adopt by pid file + GET /, agent over hybrid vsock, stop by SendCtrlAltDel', async () => {
  standin.setKnobs({});
  const v = vmDir();
  const steps: string[] = [];
  const { pid } = await bootFirecracker({
    binary: standin.binary,
    id: 'vm-a',
    files: v.files,
    consolePath: v.console,
    config: v.config,
    onStep: (s) => steps.push(s),
  });
  assert.deepEqual(steps, ['vmm-start', 'logger', 'metrics', 'machine-config', 'boot-source', 'drive-root', 'drive-seed', 'vsock', 'instance-start']);
  assert.ok(await runningNotZombie(pid));
  const found = await findFirecracker(v.files, { probe: true });
  assert.deepEqual(found, { pid, state: 'Running' });
  assert.match(readFileSync(v.console, 'utf8'), /stand-in: instance vm-a running/);
  // Pre-boot-only resources are refused after InstanceStart, with Firecracker's fault_message.
  const api = new FirecrackerApi(v.files.api);
  await assert.rejects(
    api.call({ step: 'late-boot-source', method: 'PUT', path: '/boot-source', body: { kernel_image_path: v.config.kernel } }),
    (e) => isBangerError(e, 'E_VMM') && e.details?.step === 'late-boot-source' && /not supported after starting/.test(e.message),
  );
  await assert.rejects(
    api.call({ step: 'start-again', method: 'PUT', path: '/actions', body: { action_type: 'InstanceStart' } }),
    (e) => isBangerError(e, 'E_VMM') && (e.details?.status as number) === 400,
  );
  // The real guest agent behind CONNECT 1024.
  const sock = await connectHybridVsock(v.files.vsock, 1024, { timeoutMs: 5000 });
  const answer = await new Promise<string>((resolve, reject) => {
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString();
      if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
    });
    sock.on('error', reject);
    sock.write('{"op":"health"}\n');
  });
  sock.destroy();
  assert.equal(JSON.parse(answer).ok, true);
  assert.equal(JSON.parse(answer).agent, 'banger-vsock-agent');
  // A port nothing listens on: Firecracker closes the connection → temporary → retried until the timeout.
  const t0 = Date.now();
  await assert.rejects(connectHybridVsock(v.files.vsock, 5000, { timeoutMs: 600 }), (e) => isBangerError(e, 'E_TIMEOUT'));
  assert.ok(Date.now() - t0 >= 500);
  // Pause/resume and a snapshot through the typed client.
  await api.pause();
  await api.createSnapshot({ snapshot_path: join(v.dir, 'snap.state'), mem_file_path: join(v.dir, 'snap.mem') });
  await api.resume();
  assert.equal((await api.instanceInfo()).state, 'Running');
  const r = await stopFirecracker(v.files, 5000);
  assert.equal(r.forced, false, 'SendCtrlAltDel ended the process');
  assert.ok(!(await runningNotZombie(pid)));
  assert.deepEqual(leftovers(v), []);
});

for (const [name, knobs, step, pattern] of [
  ['a step answering 400', { FC_STANDIN_FAIL_PATH: '/boot-source' }, 'boot-source', /firecracker step boot-source failed: stand-in: \/boot-source refused/],
  ['a drive whose file is missing', {}, 'drive-seed', /Unable to create the block device/],
  ['the process dying early', { FC_STANDIN_DIE_EARLY: '152' }, 'vmm-start', /exited with code 152: bad configuration.*dying early/s],
  ['a socket that never appears', { FC_STANDIN_NO_SOCKET: '1' }, 'vmm-start', /did not answer within 800 ms/],
] as const) {
  test(`boot failure unwinds: ${name}`, async () => {
    standin.setKnobs(knobs);
    const v = vmDir();
    if (step === 'drive-seed') rmSync(join(v.dir, 'seed.ext4'));
    await assert.rejects(
      bootFirecracker({
        binary: standin.binary,
        id: 'vm-f',
        files: v.files,
        consolePath: v.console,
        config: v.config,
        socketTimeoutMs: knobs === undefined || !('FC_STANDIN_NO_SOCKET' in knobs) ? 30_000 : 800,
        onStep: () => undefined,
      }),
      (e) => {
        assert.ok(isBangerError(e, 'E_VMM'), String(e));
        assert.equal(e.details?.step, step);
        assert.match(e.message, pattern);
        return true;
      },
    );
    assert.deepEqual(leftovers(v), [], 'sockets and pid file removed');
    assert.equal(await findFirecracker(v.files), undefined);
    // No stand-in of this VM's is left running.
    const ps = spawn('pgrep', ['-f', v.files.api]);
    const out = await new Promise<string>((res) => {
      let s = '';
      ps.stdout.on('data', (d) => (s += d));
      ps.on('close', () => res(s));
    });
    assert.equal(out.trim(), '', `process left behind: ${out}`);
  });
}

test('snapshot load on a fresh process: only after logger/metrics, resumes; refused after boot resources', async () => {
  standin.setKnobs({});
  const v = vmDir();
  // A vmstate as the stand-in's PUT /snapshot/create writes it (its release, what it re-opens on load).
  writeFileSync(join(v.dir, 'snap.state'), JSON.stringify({ standin: true, version: '1.16.1', machine: { vcpu: 1, memMiB: 128 }, drives: {}, taps: {} }));
  writeFileSync(join(v.dir, 'snap.mem'), 'mem');
  const { api } = await spawnFirecracker(standin.binary, 'vm-l', v.files, v.console);
  await api.call({ step: 'logger', method: 'PUT', path: '/logger', body: { log_path: v.files.log } });
  await api.loadSnapshot({
    snapshot_path: join(v.dir, 'snap.state'),
    mem_backend: { backend_type: 'File', backend_path: join(v.dir, 'snap.mem') },
    resume_vm: true,
    vsock_override: { uds_path: v.files.vsock },
  });
  assert.equal((await api.instanceInfo()).state, 'Running');
  await stopFirecracker(v.files, 3000);
  const w = vmDir();
  const second = await spawnFirecracker(standin.binary, 'vm-m', w.files, w.console);
  await second.api.call({ step: 'machine-config', method: 'PUT', path: '/machine-config', body: { vcpu_count: 1, mem_size_mib: 128 } });
  await assert.rejects(
    second.api.loadSnapshot({ snapshot_path: join(v.dir, 'snap.state'), mem_backend: { backend_type: 'File', backend_path: join(v.dir, 'snap.mem') } }),
    (e) => isBangerError(e, 'E_VMM') && e.details?.step === 'snapshot-load' && /not allowed after configuring boot-specific resources/.test(e.message),
  );
  await stopFirecracker(w.files, 500);
  assert.deepEqual([...leftovers(v), ...leftovers(w)], []);
});

test('a stale API socket is unlinked before the spawn; the process outlives a lost parent handle', async () => {
  standin.setKnobs({});
  const v = vmDir();
  writeFileSync(v.files.api, 'stale');
  const { pid } = await spawnFirecracker(standin.binary, 'vm-s', v.files, v.console);
  assert.ok(await runningNotZombie(pid));
  assert.equal(readFileSync(v.files.pid, 'utf8').trim(), String(pid));
  await stopFirecracker(v.files, 2000); // never started: Ctrl-Alt-Del refused → SIGKILL after the wait
  assert.ok(!(await runningNotZombie(pid)));
  assert.deepEqual(leftovers(v), []);
});

test('the stand-in enforces the transport: chunked bodies, unknown fields, path id ≠ body id', async () => {
  standin.setKnobs({});
  const v = vmDir();
  await spawnFirecracker(standin.binary, 'vm-t', v.files, v.console);
  const api = new FirecrackerApi(v.files.api);
  await assert.rejects(
    api.call({
      step: 'x',
      method: 'PUT',
      path: '/drives/root',
      body: { drive_id: 'seed', path_on_host: v.config.kernel, is_root_device: true, is_read_only: false },
    }),
    /path does not match the id from the body/,
  );
  await assert.rejects(api.call({ step: 'x', method: 'PUT', path: '/machine-config', body: { vcpu_count: 1, mem_size_mib: 128, bogus: true } }), /`bogus`/);
  await assert.rejects(api.call({ step: 'x', method: 'PUT', path: '/machine-config', body: { vcpu_count: 1 } }), /mem_size_mib/);
  const chunked = await new Promise<number>((resolve, reject) => {
    const r = request({ socketPath: v.files.api, method: 'PUT', path: '/machine-config', headers: { 'Transfer-Encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    r.on('error', reject);
    r.end(JSON.stringify({ vcpu_count: 1, mem_size_mib: 128 }));
  });
  assert.equal(chunked, 400);
  await stopFirecracker(v.files, 500);
  assert.deepEqual(leftovers(v), []);
});

test('a misbehaving API socket fails the call, not the process', async () => {
  const dir = mkdtempSync(join(root, 'bad-'));
  const silent = createServer(() => undefined).listen(join(dir, 'silent.sock'));
  const garbage = createServer((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnot j')).listen(join(dir, 'garbage.sock'));
  const reset = createServer((s) => s.destroy()).listen(join(dir, 'reset.sock'));
  try {
    await assert.rejects(
      new FirecrackerApi(join(dir, 'silent.sock')).instanceInfo({ timeoutMs: 300 }),
      (e) => isBangerError(e, 'E_TIMEOUT') && e.details?.step === 'describe-instance',
    );
    await assert.rejects(new FirecrackerApi(join(dir, 'garbage.sock')).instanceInfo(), (e) => isBangerError(e, 'E_VMM') && /not JSON/.test(e.message));
    await assert.rejects(new FirecrackerApi(join(dir, 'reset.sock')).instanceInfo(), (e) => isBangerError(e, 'E_VMM'));
    await assert.rejects(new FirecrackerApi(join(dir, 'absent.sock')).instanceInfo(), (e) => isBangerError(e, 'E_VMM') && e.details?.errno === 'ENOENT');
    // A vsock UDS answering garbage is a protocol error: no retry, E_VMM at once.
    // Bytes that arrive with the OK line belong to the caller, who sees them on its own 'data' listener.
    const eager = createServer((s) => s.once('data', (d) => s.write(/^CONNECT 1024\n$/.test(d.toString()) ? 'OK 1073741824\nHELLO' : 'NO\n'))).listen(
      join(dir, 'vsock-eager.sock'),
    );
    const es = await connectHybridVsock(join(dir, 'vsock-eager.sock'), 1024, { timeoutMs: 5000 });
    try {
      const first = await new Promise<string>((resolve) => {
        es.once('data', (d) => resolve(d.toString()));
        setTimeout(() => resolve('(nothing within 3 s)'), 3000).unref();
      });
      assert.equal(first, 'HELLO');
    } finally {
      es.destroy();
      eager.close();
    }
    const bad = createServer((s) => s.end('HELLO\n')).listen(join(dir, 'vsock-bad.sock'));
    await assert.rejects(
      connectHybridVsock(join(dir, 'vsock-bad.sock'), 1024, { timeoutMs: 5000 }),
      (e) => isBangerError(e, 'E_VMM') && /protocol error/.test(e.message),
    );
    bad.close();
  } finally {
    silent.close();
    garbage.close();
    reset.close();
  }
});

test('limits: Firecracker starts inside the VM cgroup (same pid as the wrapper), drives carry a rate_limiter the stand-in accepts', async () => {
  standin.setKnobs({});
  const cg = await detectCgroups(realHost.readFile);
  assert.notEqual(cg.version, 0, 'this host offers a cgroup hierarchy (v1 or v2)');
  if (cg.version === 0) return;
  const name = groupName('f00dfeedbeef', `fc${process.pid}`);
  await createGroup(cg, name, { memoryBytes: 512 * 1048576, pids: 64 });
  try {
    const v = vmDir();
    const steps: string[] = [];
    const { pid } = await bootFirecracker({
      binary: standin.binary,
      id: 'vm-lim',
      files: v.files,
      consolePath: v.console,
      config: { ...v.config, diskLimits: { iops: 100, bps: 1048576 } },
      cgroup: procsFiles(cg, name),
      onStep: (s) => steps.push(s),
    });
    // every drive body (with its rate_limiter) passed the stand-in's spec validation, which refuses unknown fields
    assert.ok(steps.includes('drive-root') && steps.at(-1) === 'instance-start', steps.join(' '));
    for (const p of procsFiles(cg, name)) assert.ok(readFileSync(p, 'utf8').split('\n').includes(String(pid)), `Firecracker ${pid} in ${p}`);
    assert.ok(
      readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('vm-lim'),
      'the pid in the group is Firecracker itself (the wrapper exec-ed it)',
    );
    await stopFirecracker(v.files, 3000);
  } finally {
    await removeGroup(cg, name);
  }
});

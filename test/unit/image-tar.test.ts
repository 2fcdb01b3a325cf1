import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, linkSync, writeFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarReader, parsePax, parseNumeric, type TarEntry } from '../../src/core/tar-reader.js';
import { isBangerError } from '../../src/core/errors.js';
import { makeTar } from '../helpers/oci.js';

/** Read a whole archive, collecting entries and their data; feeds in odd-sized chunks. */
async function readAll(buf: Buffer, chunk = 777): Promise<{ e: TarEntry; data: Buffer }[]> {
  const out: { e: TarEntry; data: Buffer }[] = [];
  const r = new TarReader((e) => {
    const rec = { e, data: Buffer.alloc(0) };
    out.push(rec);
    const parts: Buffer[] = [];
    return { write: (c) => parts.push(Buffer.from(c)), end: () => (rec.data = Buffer.concat(parts)) };
  });
  for (let i = 0; i < buf.length; i += chunk) await r.push(buf.subarray(i, i + chunk));
  r.end();
  return out;
}

const hasTar = spawnSync('tar', ['--version']).status === 0;
const hasSetfattr = spawnSync('setfattr', ['--version']).status === 0;
const root = process.getuid?.() === 0;

test('reads GNU tar (posix format) output: names, long names, links, modes, owners, mtimes, binary xattrs', {
  skip: !hasTar ? 'GNU tar missing' : !hasSetfattr ? 'setfattr (attr) missing' : !root ? 'needs root (security.* xattrs, chown)' : false,
}, async () => {
  const d = mkdtempSync(join(tmpdir(), 'banger-tar-'));
  try {
    const src = join(d, 'src');
    mkdirSync(join(src, 'bin'), { recursive: true });
    writeFileSync(join(src, 'bin', 'ping'), 'PING'.repeat(1000));
    spawnSync('chmod', ['4755', join(src, 'bin', 'ping')]);
    // cap_net_raw+ep: binary bytes including NUL and >0x7f
    const cap = Buffer.from('0100000200200000000000000000000000000000', 'hex');
    assert.equal(spawnSync('setfattr', ['-n', 'security.capability', '-v', '0s' + cap.toString('base64'), join(src, 'bin', 'ping')]).status, 0);
    assert.equal(
      spawnSync('setfattr', ['-n', 'user.blob', '-v', '0s' + Buffer.from([0, 0xff, 0xfe, 10, 61]).toString('base64'), join(src, 'bin', 'ping')]).status,
      0,
    );
    const long = 'd'.repeat(60) + '/' + 'e'.repeat(70) + '/' + 'f'.repeat(90) + '.txt';
    mkdirSync(join(src, long, '..'), { recursive: true });
    writeFileSync(join(src, long), 'long');
    linkSync(join(src, 'bin', 'ping'), join(src, 'bin', 'ping6'));
    symlinkSync('../' + 'x'.repeat(150), join(src, 'bin', 'longlink'));
    writeFileSync(join(src, 'owned'), '');
    spawnSync('chown', ['1234:5678', join(src, 'owned')]);
    utimesSync(join(src, 'owned'), 1_600_000_000, 1_600_000_000);
    spawnSync('mknod', [join(src, 'null'), 'c', '1', '3']);
    spawnSync('mkfifo', [join(src, 'fifo')]);
    const r = spawnSync('tar', ['--create', '--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name', '-C', src, '.'], {
      maxBuffer: 1 << 26,
    });
    assert.equal(r.status, 0, String(r.stderr));
    const entries = await readAll(r.stdout);
    const by = new Map(entries.map((x) => [x.e.path.replace(/^\.\//, '').replace(/\/$/, ''), x]));
    const ping = by.get('bin/ping')!;
    assert.equal(ping.e.type, 'file');
    assert.equal(ping.e.mode, 0o4755);
    assert.equal(ping.data.toString(), 'PING'.repeat(1000));
    assert.deepEqual(ping.e.xattrs.get('security.capability'), cap);
    assert.deepEqual(ping.e.xattrs.get('user.blob'), Buffer.from([0, 0xff, 0xfe, 10, 61]));
    const ping6 = by.get('bin/ping6')!;
    assert.equal(ping6.e.type, 'link');
    assert.equal(ping6.e.linkpath.replace(/^\.\//, ''), 'bin/ping');
    assert.equal(by.get(long)!.data.toString(), 'long');
    assert.equal(by.get('bin/longlink')!.e.linkpath, '../' + 'x'.repeat(150));
    const owned = by.get('owned')!;
    assert.equal(owned.e.uid, 1234);
    assert.equal(owned.e.gid, 5678);
    assert.equal(Math.floor(owned.e.mtime), 1_600_000_000);
    assert.equal(by.get('null')!.e.type, 'char');
    assert.equal(by.get('null')!.e.devmajor, 1);
    assert.equal(by.get('null')!.e.devminor, 3);
    assert.equal(by.get('fifo')!.e.type, 'fifo');
    assert.equal(by.get('bin')!.e.type, 'dir');
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('reads GNU tar gnu-format long names (L/K headers)', { skip: !hasTar && 'GNU tar missing' }, async () => {
  const d = mkdtempSync(join(tmpdir(), 'banger-tar-'));
  try {
    const name = 'n'.repeat(120);
    writeFileSync(join(d, name), 'x');
    symlinkSync('t'.repeat(130), join(d, 'lnk'));
    const r = spawnSync('tar', ['--create', '--format=gnu', '-C', d, name, 'lnk']);
    assert.equal(r.status, 0);
    const entries = await readAll(r.stdout, 100);
    assert.equal(entries[0]!.e.path, name);
    assert.equal(entries[0]!.data.toString(), 'x');
    assert.equal(entries[1]!.e.linkpath, 't'.repeat(130));
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('our writer round-trips through the reader (PAX path, binary xattr, device numbers)', async () => {
  const x = Buffer.from([1, 0, 0, 2, 0xff]);
  const tar = makeTar([
    { path: 'a/' + 'p'.repeat(200), data: 'hello', mode: 0o2755, uid: 7, gid: 8, xattrs: { 'security.capability': x } },
    { path: 'dev/sda', type: 'block', devmajor: 8, devminor: 16 },
  ]);
  const [a, dev] = await readAll(tar, 1);
  assert.equal(a!.e.path, 'a/' + 'p'.repeat(200));
  assert.equal(a!.e.mode, 0o2755);
  assert.deepEqual(a!.e.xattrs.get('security.capability'), x);
  assert.equal(a!.data.toString(), 'hello');
  assert.equal(dev!.e.type, 'block');
  assert.equal(dev!.e.devminor, 16);
});

test('a truncated archive is an error naming the entry', async () => {
  const tar = makeTar([{ path: 'big', data: 'z'.repeat(5000) }]);
  const r = new TarReader(() => undefined);
  await r.push(tar.subarray(0, 2000));
  assert.throws(
    () => r.end(),
    (e: unknown) => isBangerError(e, 'E_INVALID') && /truncated/.test(e.message) && /'big'/.test(e.message),
  );
});

test('a corrupt header is an error (checksum)', async () => {
  const tar = makeTar([{ path: 'f', data: 'x' }]);
  tar[0] = 'g'.charCodeAt(0);
  const r = new TarReader(() => undefined);
  await assert.rejects(r.push(tar), (e: unknown) => isBangerError(e, 'E_INVALID') && /checksum/.test(e.message));
});

test('parseNumeric handles octal with spaces/NULs and base-256', () => {
  assert.equal(parseNumeric(Buffer.from('0000755 \0'), 'mode'), 0o755);
  assert.equal(parseNumeric(Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]), 'size'), 2 ** 32);
  assert.throws(() => parseNumeric(Buffer.from('12x'), 'size'), /bad octal/);
});

test('parsePax keeps raw bytes and rejects malformed records', () => {
  const m = parsePax(Buffer.concat([Buffer.from('15 SCHILY.x='), Buffer.from([0, 0xff]), Buffer.from('\n')]));
  assert.deepEqual(m.get('SCHILY.x'), Buffer.from([0, 0xff]));
  assert.throws(() => parsePax(Buffer.from('99 path=x\n')), /length/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { TarReader } from '../../src/core/tar-reader.js';
import { GuestTarExtractor, currentUmask, type GuestTarLimits } from '../../src/transfer/extract.js';
import { placeCopy } from '../../src/transfer/place.js';
import { makeTar, type TEntry } from '../helpers/oci.js';

/**
 * The rules `vm cp VM:SRC DST` applies to the tar stream a guest sends (src/transfer/extract.ts, shared with the SDK's copyOut),
 * one at a time, on the extractor alone; and how the result is moved into place
 * (`placeCopy`). The same rules through the CLI and the daemon against a hostile agent:
 * test/integration/vm-cp-hostile.test.ts.
 */
const umask = currentUmask();
const isRoot = process.getuid?.() === 0;

function scratch(): string {
  return mkdtempSync(join(tmpdir(), 'banger-cpx-'));
}

async function extract(entries: TEntry[] | Buffer, o: { top?: string; owners?: boolean; limits?: Partial<GuestTarLimits> } = {}) {
  const dir = scratch();
  const ex = new GuestTarExtractor({ dir, top: o.top ?? 'top', owners: !!o.owners, limits: o.limits });
  const tar = Buffer.isBuffer(entries) ? entries : makeTar(entries);
  try {
    // in odd-sized chunks, as a socket delivers them
    for (let i = 0; i < tar.length; i += 777) await ex.push(tar.subarray(i, i + 777));
    ex.end();
  } catch (e) {
    ex.release();
    return { dir, error: e };
  }
  return { dir, error: undefined, ex };
}

const F = (path: string, more: Partial<TEntry> = {}): TEntry => ({ path, type: 'file', data: 'x', mode: 0o644, ...more });
const D = (path: string, more: Partial<TEntry> = {}): TEntry => ({ path, type: 'dir', mode: 0o755, ...more });

const REFUSED: Array<[string, TEntry[], RegExp, string?]> = [
  ['a name beside SRC', [F('top'), F('.bashrc')], /'\.bashrc'.*outside 'top'/],
  ['a name that only starts like SRC', [F('topx')], /'topx'.*outside 'top'/],
  ['.', [D('.', { mode: 0o777 })], /'\.'.*'\.' component/],
  ['./top', [F('./top')], /'\.\/top'.*'\.' component/],
  ['top/./x', [D('top'), F('top/./x')], /'\.' component/],
  ['top//x', [D('top'), F('top//x')], /empty or '\.' component/],
  ['..', [F('..')], /'\.\.' component/],
  ['top/../x', [D('top'), F('top/../x')], /'\.\.' component/],
  ['absolute', [F('/etc/passwd')], /absolute path/],
  ['NUL in a PAX path', [{ path: `top/${'a'.repeat(100)}\0b`, type: 'file' }], /NUL byte/],
  ['a parent that did not come first', [F('top/x')], /parent directory 'top' did not come before it/],
  ['a file as a parent', [F('top'), F('top/x')], /parent 'top' is a file/],
  ['a symlink as a parent', [D('top'), { path: 'top/l', type: 'symlink', linkpath: '/etc' }, F('top/l/passwd')], /parent 'top\/l' is a symlink/],
  ['a hard link as a parent', [D('top'), F('top/f'), { path: 'top/h', type: 'link', linkpath: 'top/f' }, F('top/h/x')], /parent 'top\/h' is a file/],
  ['a name twice', [D('top'), F('top/f'), F('top/f')], /appears twice/],
  ['a directory twice', [D('top'), D('top')], /appears twice/],
  ['a char device', [D('top'), { path: 'top/null', type: 'char', devmajor: 1, devminor: 3 }], /char device 1:3/],
  ['a block device', [{ path: 'top', type: 'block', devmajor: 8, devminor: 0 }], /block device 8:0/],
  ['a FIFO', [{ path: 'top', type: 'fifo' }], /FIFO/],
  ['a hard link to an absolute path', [D('top'), { path: 'top/pw', type: 'link', linkpath: '/etc/passwd' }], /hard link target '\/etc\/passwd'.*absolute/],
  ['a hard link out with ..', [D('top'), { path: 'top/pw', type: 'link', linkpath: 'top/../../etc/passwd' }], /'\.\.' component/],
  ['a hard link outside SRC', [D('top'), { path: 'top/pw', type: 'link', linkpath: 'other' }], /hard link target 'other'.*outside 'top'/],
  [
    'a hard link to a name not seen',
    [D('top'), { path: 'top/pw', type: 'link', linkpath: 'top/later' }, F('top/later')],
    /'top\/later' is not a file this stream created before it/,
  ],
  ['a hard link to a directory', [D('top'), D('top/d'), { path: 'top/h', type: 'link', linkpath: 'top/d' }], /is a directory/],
  ['a symlink with an empty target', [{ path: 'top', type: 'symlink', linkpath: '' }], /empty target/],
];

for (const [name, entries, says] of REFUSED) {
  test(`refused: ${name}; nothing is left but what the caller removes`, async () => {
    const r = await extract(entries);
    try {
      assert.ok(isBangerError(r.error, 'E_UNSAFE_ENTRY'), `${String(r.error)}`);
      assert.match((r.error as Error).message, says);
      assert.match((r.error as Error).message, /^refused entry '.*' of the guest's tar stream: /);
      assert.equal(typeof (r.error as { details?: { entry?: unknown } }).details?.entry, 'string');
    } finally {
      rmSync(r.dir, { recursive: true, force: true });
    }
  });
}

test('refused: an unknown entry type (GNU sparse, a socket-like type) is E_INVALID from the reader', async () => {
  const t = makeTar([F('top')]);
  t.write('S', 156, 'ascii'); // GNU sparse typeflag, checksum fixed below
  t.write('        ', 148, 'ascii');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += t[i]!;
  t.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  const r = await extract(t);
  rmSync(r.dir, { recursive: true, force: true });
  assert.ok(isBangerError(r.error, 'E_INVALID'), String(r.error));
  assert.match((r.error as Error).message, /unsupported entry type 'S'/);
});

/** Rewrites bytes of the first header and fixes its checksum. */
function patchHeader(tar: Buffer, offset: number, bytes: Buffer): Buffer {
  const t = Buffer.from(tar);
  bytes.copy(t, offset);
  t.write('        ', 148, 'ascii');
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += t[i]!;
  t.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  return t;
}

test('refused: an owner (base-256) or mtime out of range', async () => {
  const uid = patchHeader(makeTar([F('top')]), 108, Buffer.from([0x80, 0, 0, 1, 0, 0, 0, 0])); // 2^32
  const r = await extract(uid);
  rmSync(r.dir, { recursive: true, force: true });
  assert.ok(isBangerError(r.error, 'E_UNSAFE_ENTRY'), String(r.error));
  assert.match(String(r.error), /owner 4294967296:0 is out of range/);
  const mtime = patchHeader(makeTar([F('top')]), 136, Buffer.from([0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])); // 2^48 s);
  const m = await extract(mtime);
  rmSync(m.dir, { recursive: true, force: true });
  assert.ok(isBangerError(m.error, 'E_UNSAFE_ENTRY'), String(m.error));
  assert.match(String(m.error), /mtime .* is out of range/);
});

test('refused: a stream with no entry for SRC, and a truncated stream', async () => {
  const empty = await extract([]);
  rmSync(empty.dir, { recursive: true, force: true });
  assert.match(String(empty.error), /holds no entry 'top'/);
  const full = makeTar([D('top'), F('top/f', { data: Buffer.alloc(5000, 1) })]);
  const cut = await extract(full.subarray(0, 2048));
  rmSync(cut.dir, { recursive: true, force: true });
  assert.ok(isBangerError(cut.error, 'E_INVALID'));
  assert.match(String(cut.error), /truncated/);
});

test('limits: entries, name length, component length, link target length, all names together: E_TOO_LARGE', async () => {
  const cases: Array<[TEntry[], Partial<GuestTarLimits>, RegExp]> = [
    [[D('top'), F('top/a'), F('top/b'), F('top/c')], { maxEntries: 3 }, /more than 3 entries/],
    [[D('top'), F(`top/${'a'.repeat(200)}`)], { maxPathBytes: 100 }, /longer than 100 bytes/],
    [[D('top'), F(`top/${'a'.repeat(256)}`)], {}, /component longer than 255 bytes/],
    [[D('top'), { path: 'top/l', type: 'symlink', linkpath: 'x'.repeat(200) }], { maxPathBytes: 100 }, /symlink target is longer than 100 bytes/],
    [[D('top'), F('top/aaaaaaaa'), F('top/bbbbbbbb')], { maxTotalPathBytes: 20 }, /names in the stream take more than 20 bytes/],
  ];
  for (const [entries, limits, says] of cases) {
    const r = await extract(entries, { limits });
    rmSync(r.dir, { recursive: true, force: true });
    assert.ok(isBangerError(r.error, 'E_TOO_LARGE'), `${says}: ${String(r.error)}`);
    assert.match(String(r.error), says);
  }
  // the same streams pass with the default limits (but the 256-byte component)
  const ok = await extract([D('top'), F('top/a'), F('top/b'), F('top/c'), F(`top/${'a'.repeat(200)}`)]);
  rmSync(ok.dir, { recursive: true, force: true });
  assert.equal(ok.error, undefined);
});

test('limits: PAX and GNU long-name records are bounded by maxMetaBytes (pending before one entry, and global)', async () => {
  const pax = (key: string, value: string) => {
    const body = ` ${key}=${value}\n`;
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return `${len}${body}`;
  };
  const meta = (type: 'x' | 'g', body: string) => {
    // a PAX header entry built the way makeTar builds its own
    const h = makeTar([{ path: 'PaxHeaders/x', type: 'file', data: body }]).subarray(0, -1024);
    h.write(type, 156, 'ascii');
    h.write('        ', 148, 'ascii');
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += h[i]!;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
    return h;
  };
  const entry = makeTar([F('top')]);
  const big = pax('comment', 'c'.repeat(3000));
  for (const [stream, says] of [
    [Buffer.concat([meta('x', big), entry]), /extended header of \d+ bytes is too large \(limit 2048\)/],
    [
      Buffer.concat([meta('x', pax('comment', 'c'.repeat(1500))), meta('x', pax('comment', 'd'.repeat(1500))), entry]),
      /extended headers before one entry take more than 2048 bytes/,
    ],
    [
      Buffer.concat([meta('g', pax('comment', 'c'.repeat(1500))), meta('g', pax('comment', 'd'.repeat(1500))), entry]),
      /global PAX headers take more than 2048 bytes/,
    ],
  ] as const) {
    const r = await extract(stream, { limits: { maxMetaBytes: 2048 } });
    rmSync(r.dir, { recursive: true, force: true });
    assert.ok(isBangerError(r.error, 'E_INVALID'), String(r.error));
    assert.match(String(r.error), says);
  }
  // records that fit, one entry after another, are fine: the count restarts at each entry
  const fine = Buffer.concat([
    meta('x', pax('comment', 'c'.repeat(1500))),
    makeTar([D('top')]).subarray(0, -1024),
    meta('x', pax('comment', 'd'.repeat(1500))),
    makeTar([F('top/f')]),
  ]);
  const r = await extract(fine, { limits: { maxMetaBytes: 2048 } });
  rmSync(r.dir, { recursive: true, force: true });
  assert.equal(r.error, undefined);
  // the reader's own default (image layers) is 16 MiB
  const reader = new TarReader(() => undefined);
  await assert.rejects(reader.push(Buffer.concat([meta('x', pax('comment', 'c'.repeat(17 << 20)))])), /limit 16777216/);
});

test('accepted: files, directories, symlinks, hard links; setuid/setgid/sticky dropped; umask applied; mtimes kept; directory modes applied last', async () => {
  const r = await extract([
    D('top', { mode: 0o3777, mtime: 1_100_000_000 }),
    D('top/ro', { mode: 0o555 }),
    F('top/ro/f', { mode: 0o4755, data: 'suid', mtime: 1_000_000_000 }),
    F('top/g', { mode: 0o2777, data: 'sgid' }),
    { path: 'top/l', type: 'symlink', linkpath: '/etc/passwd', mtime: 1_200_000_000 },
    { path: 'top/hl', type: 'link', linkpath: 'top/ro/f' },
    { path: 'top/hl2', type: 'link', linkpath: 'top/l' },
    F('top/big', { data: Buffer.alloc(100_000, 7) }),
  ]);
  try {
    assert.equal(r.error, undefined, String(r.error));
    const m = (p: string) => lstatSync(join(r.dir, p)).mode & 0o7777;
    assert.equal(m('top'), 0o777 & ~umask);
    assert.equal(m('top/ro'), 0o555 & ~umask);
    assert.equal(m('top/ro/f'), 0o755 & ~umask);
    assert.equal(m('top/g'), 0o777 & ~umask);
    assert.equal(readFileSync(join(r.dir, 'top/ro/f'), 'utf8'), 'suid');
    assert.equal(lstatSync(join(r.dir, 'top/ro/f')).mtimeMs, 1_000_000_000_000);
    assert.equal(lstatSync(join(r.dir, 'top')).mtimeMs, 1_100_000_000_000);
    assert.equal(readlinkSync(join(r.dir, 'top/l')), '/etc/passwd');
    assert.equal(lstatSync(join(r.dir, 'top/l')).mtimeMs, 1_200_000_000_000);
    assert.equal(lstatSync(join(r.dir, 'top/hl')).ino, lstatSync(join(r.dir, 'top/ro/f')).ino);
    assert.ok(lstatSync(join(r.dir, 'top/hl2')).isSymbolicLink());
    assert.equal(readFileSync(join(r.dir, 'top/big')).length, 100_000);
    assert.deepEqual(r.ex!.stats, { entries: 8, files: 3, bytes: 100_008 });
    assert.deepEqual(readdirSync(r.dir), ['top']);
  } finally {
    chmodSync(join(r.dir, 'top', 'ro'), 0o700);
    rmSync(r.dir, { recursive: true, force: true });
  }
});

test("owners: kept only when asked (-a as root), with exact modes; otherwise the files are the caller's", {
  skip: isRoot ? false : 'needs root to chown',
}, async () => {
  const entries: TEntry[] = [
    D('top', { uid: 1234, gid: 2345, mode: 0o777 }),
    F('top/f', { uid: 1234, gid: 2345, mode: 0o4777 }),
    { path: 'top/l', type: 'symlink', linkpath: 'f', uid: 1234, gid: 2345 },
  ];
  const a = await extract(entries, { owners: true });
  const b = await extract(entries, { owners: false });
  try {
    const o = (dir: string, p: string) => {
      const s = lstatSync(join(dir, p));
      return [s.uid, s.gid, s.isSymbolicLink() ? 0 : s.mode & 0o7777];
    };
    assert.deepEqual(o(a.dir, 'top'), [1234, 2345, 0o777]);
    assert.deepEqual(o(a.dir, 'top/f'), [1234, 2345, 0o777]);
    assert.deepEqual(o(a.dir, 'top/l'), [1234, 2345, 0]);
    assert.deepEqual(o(b.dir, 'top/f'), [0, 0, 0o777 & ~umask]);
  } finally {
    rmSync(a.dir, { recursive: true, force: true });
    rmSync(b.dir, { recursive: true, force: true });
  }
});

test('placeCopy: a file or symlink at the target is replaced, never followed; directories merge keeping the existing mode; a non-directory onto a directory is refused before anything moves', async () => {
  const w = scratch();
  try {
    mkdirSync(join(w, 'outside'));
    writeFileSync(join(w, 'outside', 'target'), 'outside');
    mkdirSync(join(w, 'dst'));
    symlinkSync('../outside/target', join(w, 'dst', 'f'));
    symlinkSync('../outside', join(w, 'dst', 'd'));
    mkdirSync(join(w, 'new', 'd'), { recursive: true });
    writeFileSync(join(w, 'new', 'f'), 'new');
    writeFileSync(join(w, 'new', 'd', 'x'), 'x');
    await placeCopy(join(w, 'new', 'f'), join(w, 'dst', 'f'));
    await placeCopy(join(w, 'new', 'd'), join(w, 'dst', 'd'));
    assert.ok(lstatSync(join(w, 'dst', 'f')).isFile());
    assert.ok(lstatSync(join(w, 'dst', 'd')).isDirectory());
    assert.deepEqual(readdirSync(join(w, 'outside')), ['target']);
    assert.equal(readFileSync(join(w, 'outside', 'target'), 'utf8'), 'outside');
    // merge
    mkdirSync(join(w, 'dst', 'm', 'sub'), { recursive: true, mode: 0o700 });
    chmodSync(join(w, 'dst', 'm'), 0o701);
    writeFileSync(join(w, 'dst', 'm', 'mine'), 'mine');
    mkdirSync(join(w, 'n2', 'm', 'sub'), { recursive: true });
    writeFileSync(join(w, 'n2', 'm', 'sub', 'y'), 'y');
    writeFileSync(join(w, 'n2', 'm', 'mine2'), 'z');
    chmodSync(join(w, 'n2', 'm'), 0o555);
    await placeCopy(join(w, 'n2', 'm'), join(w, 'dst', 'm'));
    assert.equal(lstatSync(join(w, 'dst', 'm')).mode & 0o777, 0o701);
    assert.deepEqual(readdirSync(join(w, 'dst', 'm')).sort(), ['mine', 'mine2', 'sub']);
    assert.equal(readFileSync(join(w, 'dst', 'm', 'sub', 'y'), 'utf8'), 'y');
    // a file onto a directory: refused, and the directory merge that would come first did not happen
    mkdirSync(join(w, 'n3', 'm'), { recursive: true });
    writeFileSync(join(w, 'n3', 'm', 'a-first'), 'a');
    writeFileSync(join(w, 'n3', 'm', 'sub'), 'not a dir');
    await assert.rejects(placeCopy(join(w, 'n3', 'm'), join(w, 'dst', 'm')), /cannot overwrite the directory .*sub with a non-directory; nothing was copied/);
    assert.deepEqual(readdirSync(join(w, 'dst', 'm')).sort(), ['mine', 'mine2', 'sub']);
  } finally {
    rmSync(w, { recursive: true, force: true });
  }
});

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigSchema, type Config } from '../../src/core/config.js';
import { openDb } from '../../src/core/db.js';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { layout } from '../../src/core/paths.js';
import type { Context } from '../../src/core/context.js';
import { BangerError } from '../../src/core/errors.js';
import assert from 'node:assert/strict';

/**
 * Kernel bundle fixtures, built with the real GNU `tar` and `zstd`, plus hand-written tar
 * headers for entries GNU tar will not produce from a directory (absolute paths, "..",
 * devices, links to arbitrary targets). And a loopback HTTP server that serves them.
 */

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function run(argv: string[], opts: { cwd?: string; input?: Buffer } = {}): Buffer {
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: opts.cwd, input: opts.input, maxBuffer: 1 << 30, env: { ...process.env, LC_ALL: 'C' } });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr?.toString()}`);
  return r.stdout;
}

/** Compress with the zstd CLI (`long` = --long=N window). */
export function zstd(data: Buffer, opts: { long?: number; level?: number } = {}): Buffer {
  return run(['zstd', '-q', '-c', `-${opts.level ?? 3}`, ...(opts.long ? [`--long=${opts.long}`] : []), '-'], { input: data });
}

/** The files of a good bundle: vmlinux, initrd.img, modules/ with an in-tree symlink. */
export function goodTree(dir: string, opts: { vmlinux?: Buffer; withInitrd?: boolean; withModules?: boolean } = {}): { vmlinux: Buffer } {
  const vmlinux = opts.vmlinux ?? Buffer.concat([Buffer.from('\x7fELF'), Buffer.alloc(4096, 7), Buffer.from(`fixture ${dir}`)]);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vmlinux'), vmlinux);
  if (opts.withInitrd !== false) writeFileSync(join(dir, 'initrd.img'), Buffer.alloc(2048, 1));
  if (opts.withModules !== false) {
    mkdirSync(join(dir, 'modules', '6.1.0-test', 'kernel'), { recursive: true });
    writeFileSync(join(dir, 'modules', '6.1.0-test', 'kernel', 'virtio_blk.ko'), 'module');
    symlinkSync('kernel/virtio_blk.ko', join(dir, 'modules', '6.1.0-test', 'alias.ko'));
  }
  return { vmlinux };
}

/** tar (GNU, real) of a directory's contents, then zstd. */
export function tarZstDir(dir: string, opts: { long?: number } = {}): Buffer {
  const tarBytes = run(['tar', '-C', dir, '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '.']);
  return zstd(tarBytes, opts);
}

/** Build a good bundle in a temp dir and return its bytes and its vmlinux. */
export function goodBundle(opts: { vmlinux?: Buffer; withInitrd?: boolean; withModules?: boolean; long?: number } = {}): { bundle: Buffer; vmlinux: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), 'banger-kb-'));
  try {
    const { vmlinux } = goodTree(dir, opts);
    return { bundle: tarZstDir(dir, opts), vmlinux };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** One raw tar entry for `rawTar`. typeflag: '0' file, '1' hard link, '2' symlink, '3' char, '4' block, '5' dir, '6' fifo. */
export interface RawEntry {
  name: string;
  type?: '0' | '1' | '2' | '3' | '4' | '5' | '6';
  body?: Buffer | string;
  linkname?: string;
  mode?: number;
}

/** Write a ustar archive by hand (names up to 100 bytes). */
export function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const body = e.body === undefined ? Buffer.alloc(0) : Buffer.from(e.body);
    const type = e.type ?? '0';
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, 'utf8');
    h.write((e.mode ?? (type === '5' ? 0o755 : 0o644)).toString(8).padStart(7, '0') + '\0', 100, 8, 'ascii');
    h.write('0000000\0', 108, 8, 'ascii');
    h.write('0000000\0', 116, 8, 'ascii');
    h.write((type === '0' ? body.length : 0).toString(8).padStart(11, '0') + '\0', 124, 12, 'ascii');
    h.write('00000000000\0', 136, 12, 'ascii');
    h.write('        ', 148, 8, 'ascii');
    h.write(type, 156, 1, 'ascii');
    if (e.linkname) h.write(e.linkname, 157, 100, 'utf8');
    h.write('ustar\0', 257, 6, 'ascii');
    h.write('00', 263, 2, 'ascii');
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
    blocks.push(h);
    if (type === '0' && body.length) {
      blocks.push(body);
      const pad = (512 - (body.length % 512)) % 512;
      if (pad) blocks.push(Buffer.alloc(pad));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** A hand-made bundle: a valid vmlinux plus `extra` entries, zstd-compressed by the CLI. */
export function rawBundle(extra: RawEntry[], opts: { withVmlinux?: boolean } = {}): Buffer {
  const base: RawEntry[] = opts.withVmlinux === false ? [] : [{ name: 'vmlinux', body: Buffer.concat([Buffer.from('\x7fELF'), Buffer.alloc(1024, 3)]) }];
  return zstd(rawTar([...base, ...extra]));
}

/** Malicious bundles, each with the entry the error must name. */
export function maliciousBundles(): { label: string; bundle: Buffer; entry: string; code: string }[] {
  return [
    { label: 'absolute path', bundle: rawBundle([{ name: '/etc/banger-evil', body: 'x' }]), entry: '/etc/banger-evil', code: 'E_UNSAFE_ENTRY' },
    { label: 'dot-dot path', bundle: rawBundle([{ name: '../evil', body: 'x' }]), entry: '../evil', code: 'E_UNSAFE_ENTRY' },
    {
      label: 'path escaping after normalisation',
      bundle: rawBundle([{ name: 'modules/../../evil', body: 'x' }]),
      entry: 'modules/../../evil',
      code: 'E_UNSAFE_ENTRY',
    },
    {
      label: 'symlink to an absolute path',
      bundle: rawBundle([{ name: 'passwd', type: '2', linkname: '/etc/passwd' }]),
      entry: 'passwd',
      code: 'E_UNSAFE_ENTRY',
    },
    {
      label: 'symlink escaping upwards',
      bundle: rawBundle([
        { name: 'modules', type: '5' },
        { name: 'modules/up', type: '2', linkname: '../../..' },
      ]),
      entry: 'modules/up',
      code: 'E_UNSAFE_ENTRY',
    },
    {
      label: 'symlink escaping through another symlink',
      bundle: rawBundle([
        { name: 'x', type: '5' },
        { name: 'x/y', type: '2', linkname: '.' },
        { name: 'l1', type: '2', linkname: 'x/y/../..' },
      ]),
      entry: 'l1',
      code: 'E_UNSAFE_ENTRY',
    },
    {
      label: 'file written through a symlink',
      bundle: rawBundle([
        { name: 'sub', type: '5' },
        { name: 'lnk', type: '2', linkname: 'sub' },
        { name: 'lnk/file', body: 'x' },
      ]),
      entry: 'lnk/file',
      code: 'E_UNSAFE_ENTRY',
    },
    { label: 'hard link', bundle: rawBundle([{ name: 'hard', type: '1', linkname: 'vmlinux' }]), entry: 'hard', code: 'E_UNSAFE_ENTRY' },
    { label: 'character device', bundle: rawBundle([{ name: 'null', type: '3' }]), entry: 'null', code: 'E_UNSAFE_ENTRY' },
    { label: 'block device', bundle: rawBundle([{ name: 'sda', type: '4' }]), entry: 'sda', code: 'E_UNSAFE_ENTRY' },
    { label: 'FIFO', bundle: rawBundle([{ name: 'pipe', type: '6' }]), entry: 'pipe', code: 'E_UNSAFE_ENTRY' },
    {
      label: 'duplicate file',
      bundle: rawBundle([
        { name: 'initrd.img', body: 'a' },
        { name: 'initrd.img', body: 'b' },
      ]),
      entry: 'initrd.img',
      code: 'E_UNSAFE_ENTRY',
    },
    { label: 'no vmlinux', bundle: rawBundle([{ name: 'initrd.img', body: 'a' }], { withVmlinux: false }), entry: 'vmlinux', code: 'E_BUNDLE' },
    { label: 'vmlinux is a directory', bundle: rawBundle([{ name: 'vmlinux', type: '5' }], { withVmlinux: false }), entry: 'vmlinux', code: 'E_BUNDLE' },
    { label: 'not zstd', bundle: Buffer.from('this is not a zstd frame at all, just text\n'.repeat(50)), entry: 'zstd', code: 'E_BUNDLE' },
    { label: 'zstd of garbage (not tar)', bundle: zstd(Buffer.alloc(4096, 0x41)), entry: 'tar', code: 'E_BUNDLE' },
  ];
}

/** A route of the test server. */
export interface Route {
  body: Buffer | string;
  status?: number;
  /** Send only this many bytes of the body (with the full Content-Length), then cut the connection. */
  cutAfter?: number;
  /** Delay before answering (ms). */
  delayMs?: number;
  /** Stream slowly: bytes per 20 ms tick. */
  slowChunk?: number;
  contentType?: string;
  /** Answer 302 with this Location instead. */
  redirect?: string;
}

/** A loopback HTTP server (127.0.0.1, port 0) with a mutable route table and request counts. */
export class BundleServer {
  readonly routes = new Map<string, Route>();
  readonly hits = new Map<string, number>();
  /** Body bytes handed to the socket per path (slow routes), to see when a client stopped early. */
  readonly sent = new Map<string, number>();
  private server?: Server;
  port = 0;

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  set(path: string, route: Route | Buffer | string): void {
    this.routes.set(path, Buffer.isBuffer(route) || typeof route === 'string' ? { body: route } : route);
  }

  count(path: string): number {
    return this.hits.get(path) ?? 0;
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      this.hits.set(path, (this.hits.get(path) ?? 0) + 1);
      const r = this.routes.get(path);
      const answer = () => {
        if (!r) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          return res.end('not found\n');
        }
        if (r.redirect) {
          res.writeHead(302, { location: r.redirect, 'content-length': '0' });
          return res.end();
        }
        const body = Buffer.from(r.body);
        const status = r.status ?? 200;
        res.writeHead(status, { 'content-length': String(body.length), 'content-type': r.contentType ?? 'application/octet-stream' });
        if (r.cutAfter !== undefined) {
          res.write(body.subarray(0, r.cutAfter), () => setTimeout(() => res.socket?.destroy(), 20));
          return;
        }
        if (r.slowChunk) {
          let off = 0;
          const tick = () => {
            if (res.destroyed) return;
            if (off >= body.length) return void res.end();
            res.write(body.subarray(off, off + r.slowChunk!));
            off += r.slowChunk!;
            this.sent.set(path, Math.min(off, body.length));
            setTimeout(tick, 20);
          };
          return tick();
        }
        res.end(body);
      };
      if (r?.delayMs) setTimeout(answer, r.delayMs);
      else answer();
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** A catalog document with bundle entries served by `srv`. */
export function catalogDoc(
  entries: { name: string; path: string; bundle: Buffer; kernelVersion?: string; sha256?: string; description?: string }[],
  srv: BundleServer,
): object {
  return {
    version: 1,
    entries: entries.map((e) => ({
      name: e.name,
      distro: 'test',
      arch: 'x86_64',
      kernelVersion: e.kernelVersion ?? '6.1.0-test',
      tarballUrl: srv.url(e.path),
      tarballSha256: e.sha256 ?? sha256(e.bundle),
      sizeBytes: e.bundle.length,
      description: e.description ?? `test kernel ${e.name}`,
    })),
  };
}

/** A service Context on a fresh temp root, with the given catalogs. */
export function testContext(opts: { kernelCatalogs?: string[]; config?: Record<string, unknown> } = {}): Context & { cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'banger-kt-'));
  const lay = layout(root, join(root, 'bangerd.sock'));
  for (const d of [lay.tmp, lay.blobs, lay.kernels]) mkdirSync(d, { recursive: true });
  const parsed = ConfigSchema.parse({ ...opts.config, kernelCatalogs: opts.kernelCatalogs ?? [] });
  const config: Config = { ...parsed, root, socket: lay.socket, configFile: join(root, 'config.json') };
  const db = openDb(lay.db);
  return {
    config,
    layout: lay,
    db,
    log: nullLogger,
    exec,
    cleanup() {
      db.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Every path under kernels/, tmp/ and blobs/ (to prove nothing was left behind). */
export function storeSnapshot(ctx: Context): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    if (!existsSync(d)) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      out.push(`${rel}/${e.name}`);
      if (e.isDirectory()) walk(join(d, e.name), `${rel}/${e.name}`);
    }
  };
  walk(ctx.layout.kernels, 'kernels');
  walk(ctx.layout.tmp, 'tmp');
  walk(ctx.layout.blobs, 'blobs');
  return out.sort();
}

export function readJson<T = any>(p: string): T {
  return JSON.parse(readFileSync(p, 'utf8')) as T;
}

/** Reason to skip when a tool the fixtures need is missing (CI installs them: zstd, tar). */
export function missingToolsReason(...tools: string[]): string | undefined {
  const missing = tools.filter((t) => spawnSync('which', [t]).status !== 0);
  return missing.length ? `missing tools: ${missing.join(', ')}` : undefined;
}

/** The BangerError a promise rejects with; fails the test when it resolves or throws something else. */
export async function failure(p: Promise<unknown>): Promise<BangerError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof BangerError, String(e));
    return e;
  }
  assert.fail('expected a failure');
}

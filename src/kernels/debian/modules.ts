import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';

/**
 * Kernel modules for the initramfs: which files, in which order. Debian's .deb ships no
 * modules.dep (depmod runs at install time), so dependencies are read from each module's own
 * ELF `.modinfo` section (`depends=`, written by modpost), the same data depmod uses.
 */

/** The modules a banger guest needs from a modular kernel, in load order (HOST.md "Kernels"). */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
  'vsock',
  'vmw_vsock_virtio_transport_common',
  'vmw_vsock_virtio_transport',
  'virtio_rng',
  'virtio_console',
  'ext4',
] as const;

/**
 * Modules for host folders (`vm create --mount`): virtiofs and 9p. Loaded by the initramfs when
 * the kernel has them (a kernel without 9p, like Debian's cloud kernel, simply lacks it), so a
 * mount needs nothing from the guest's own tools: docker.io's debian:bookworm has no kmod, so
 * its `modprobe` does not exist (issue 20).
 */
export const MOUNT_MODULES = ['fuse', 'virtiofs', '9pnet', '9pnet_virtio', '9p'] as const;

/** Module name as the kernel sees it: basename without .ko(.xz|.zst|.gz), dashes as underscores. */
export function moduleName(file: string): string {
  return file
    .replace(/^.*\//, '')
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');
}

/** The NUL-separated key=value strings of an ELF64 module's `.modinfo` section. Pure. */
export function readModinfo(elf: Buffer, what: string): Map<string, string[]> {
  const bad = (why: string) => new BangerError(ErrorCode.Bundle, `kernel module ${what}: ${why}`, { details: { file: what } });
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) throw bad('not a little-endian ELF64 object');
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  if (shentsize < 64 || shoff + shnum * shentsize > elf.length || shstrndx >= shnum) throw bad('section header table out of range');
  const sec = (i: number) => {
    const o = shoff + i * shentsize;
    return { name: elf.readUInt32LE(o), offset: Number(elf.readBigUInt64LE(o + 0x18)), size: Number(elf.readBigUInt64LE(o + 0x20)) };
  };
  const strtab = sec(shstrndx);
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = sec(i);
    const nameStart = strtab.offset + s.name;
    const nameEnd = elf.indexOf(0, nameStart);
    if (elf.toString('latin1', nameStart, nameEnd) !== '.modinfo') continue;
    if (s.offset + s.size > elf.length) throw bad('.modinfo out of range');
    for (const kv of elf.toString('utf8', s.offset, s.offset + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      out.set(k, [...(out.get(k) ?? []), kv.slice(eq + 1)]);
    }
    return out;
  }
  throw bad('no .modinfo section');
}

/** Read a module file, decompressing .ko.xz/.ko.zst/.ko.gz. */
export async function readModule(path: string, exec: Exec): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  if (path.endsWith('.gz')) return gunzipSync(await readFile(path));
  const tool = path.endsWith('.xz') ? ['xz', '-dc', path] : ['zstd', '-dc', path];
  return (await exec(tool, { binary: true })).stdoutBuffer;
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) out.push(p);
  }
  return out;
}

export interface ResolvedModule {
  name: string;
  /** Path relative to lib/modules/<version>/ (e.g. kernel/drivers/block/virtio_blk.ko, never compressed). */
  rel: string;
  /** Uncompressed module bytes. */
  data: Buffer;
}

/**
 * Resolve `wanted` (module names) in `modDir` (= lib/modules/<version>) to modules with all their
 * dependencies, dependencies first, each once. Names listed in modules.builtin are skipped.
 * A wanted module that is neither a file nor built in is E_BUNDLE; an `optional` one is then
 * left out.
 */
export async function resolveModules(
  modDir: string,
  wanted: readonly string[],
  exec: Exec,
  optional: readonly string[] = [],
): Promise<{ modules: ResolvedModule[]; builtin: string[] }> {
  const files = await walk(join(modDir, 'kernel')).catch(() => [] as string[]);
  const byName = new Map(files.map((f) => [moduleName(f), f]));
  let builtinText = '';
  try {
    builtinText = await readFile(join(modDir, 'modules.builtin'), 'utf8');
  } catch {
    /* a kernel without the list: everything not found as a file is an error */
  }
  const builtin = new Set(builtinText.split('\n').filter(Boolean).map(moduleName));
  const done = new Map<string, ResolvedModule>();
  const order: ResolvedModule[] = [];
  const skipped: string[] = [];
  const visit = async (name: string, chain: string[]): Promise<void> => {
    const n = name.replace(/-/g, '_');
    if (done.has(n) || chain.includes(n)) return;
    const file = byName.get(n);
    if (!file) {
      if (builtin.has(n)) {
        if (!skipped.includes(n)) skipped.push(n);
        return;
      }
      throw new BangerError(
        ErrorCode.Bundle,
        `kernel module ${n}${chain.length ? ` (needed by ${chain.join(' → ')})` : ''} is neither in ${modDir} nor built in`,
        {
          hint: 'this kernel cannot drive a banger microVM (virtio/vsock/ext4 missing); choose another kernel',
          details: { module: n, modDir },
        },
      );
    }
    const data = await readModule(file, exec);
    const deps = (readModinfo(data, file).get('depends') ?? []).flatMap((d) => d.split(',')).filter(Boolean);
    for (const d of deps) await visit(d, [...chain, n]);
    const rel = relative(modDir, file).replace(/\.(xz|zst|gz)$/, '');
    const m = { name: n, rel, data };
    done.set(n, m);
    order.push(m);
  };
  for (const w of wanted) await visit(w, []);
  // Optional modules (and their dependencies) only when the kernel ships them as files.
  for (const o of optional) if (byName.has(o.replace(/-/g, '_'))) await visit(o, []);
  return { modules: order, builtin: skipped };
}

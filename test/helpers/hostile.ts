import { relative } from 'node:path';
import { CAP_NET_RAW } from './canary.js';
import type { TEntry } from './oci.js';

/**
 * Generated hostile layer sets: every ancestor of a set of "payload" entries (FIFO, char and
 * block devices, a setuid file with `security.capability` and `user.*` xattrs, a directory
 * with xattrs, a hard link, a symlink, whiteouts, an opaque marker) is swapped for a symlink
 * to a canary directory outside the root, at a chosen point relative to the payload (before,
 * between, after; in the same layer or a later one), with filler directories in between so
 * asynchronous work has time to land. Deterministic per seed.
 */
export interface Scenario {
  name: string;
  layers: TEntry[][];
  /** True when some entry is written under the swapped path after the swap: must be refused. */
  mustRefuse: boolean;
  /** The ancestor swapped for a symlink (a symlink in the result when the archive applies). */
  swapped: string;
}

/** Small deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE = { uid: 4242, gid: 4242 };

/** The payload entries placed in directory `dir` (relative, no trailing slash). */
export function payload(dir: string): TEntry[] {
  return [
    { path: `${dir}/victim`, type: 'fifo', mode: 0o4777, ...HOSTILE, xattrs: { 'security.capability': CAP_NET_RAW } },
    { path: `${dir}/null`, type: 'char', devmajor: 1, devminor: 3, mode: 0o666, ...HOSTILE },
    { path: `${dir}/x`, type: 'block', devmajor: 7, devminor: 250, mode: 0o660, ...HOSTILE },
    // names the canary does not have: a node created through a swapped parent shows up as a new entry
    { path: `${dir}/fresh-fifo`, type: 'fifo', mode: 0o666, ...HOSTILE },
    { path: `${dir}/fresh-null`, type: 'char', devmajor: 1, devminor: 3, mode: 0o666, ...HOSTILE },
    { path: `${dir}/bin`, data: '#!/bin/sh\n', mode: 0o4755, ...HOSTILE, xattrs: { 'security.capability': CAP_NET_RAW, 'user.hostile': Buffer.from('1') } },
    { path: `${dir}/sub/`, type: 'dir', mode: 0o1777, ...HOSTILE, mtime: 1_000_000, xattrs: { 'user.hostile': Buffer.from('dir') } },
    { path: `${dir}/hl`, type: 'link', linkpath: `${dir}/bin` },
    { path: `${dir}/ln`, type: 'symlink', linkpath: 'bin', ...HOSTILE },
    { path: `${dir}/.wh.passwd` },
    { path: `${dir}/file`, data: 'data\n', mode: 0o6755, ...HOSTILE, mtime: 1_000_000 },
  ];
}

function fillers(n: number, tag: string): TEntry[] {
  return Array.from({ length: n }, (_, i) => ({ path: `filler-${tag}/${i}/`, type: 'dir' as const }));
}

/**
 * One scenario: ancestors `a`, `a/b`, `a/b/c`; the payload goes into one of them; one ancestor
 * (the payload's own directory or any parent of it) is swapped for a symlink to `canary`
 * (absolute, or relative from inside the root at `rootDir`, or from any depth when it is not
 * given) after k of the payload entries;
 * the rest of the payload follows the swap (same layer or the next).
 */
export function scenario(seed: number, canary: string, rootDir?: string): Scenario {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const depth = 1 + Math.floor(r() * 3);
  const ancestors = ['a', 'a/b', 'a/b/c'].slice(0, depth);
  const dir = ancestors[depth - 1]!;
  const swapped = pick(ancestors);
  let items = payload(dir);
  // a random subset, in a random order (hard link only after its target)
  items = items.filter(() => r() < 0.8);
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  const bin = items.findIndex((e) => e.path.endsWith('/bin'));
  const hl = items.findIndex((e) => e.path.endsWith('/hl'));
  if (hl >= 0 && (bin < 0 || hl < bin)) items.splice(hl, 1);
  const k = Math.floor(r() * (items.length + 1));
  const before = items.slice(0, k);
  const after = items.slice(k);
  const rel = r() < 0.5;
  // relative: exact when the root is known, else enough '..' to reach '/' from any staging depth
  const from = `${rootDir}/${swapped.split('/').slice(0, -1).join('/')}`;
  const target = !rel ? canary : rootDir ? relative(from, canary) : '../'.repeat(24) + canary.slice(1);
  const swap: TEntry = { path: swapped, type: 'symlink', linkpath: target };
  const dirs: TEntry[] = ancestors.map((a) => ({ path: `${a}/`, type: 'dir' }));
  const fill = fillers(Math.floor(r() * 400), String(seed));
  const later = r() < 0.4;
  const layers: TEntry[][] = later
    ? [
        [...dirs, ...before, ...fill],
        [swap, ...after],
      ]
    : [[...dirs, ...before, ...fill, swap, ...after]];
  const mustRefuse = after.length > 0;
  return {
    swapped,
    name: `seed ${seed}: payload in ${dir}, ${before.length} before, swap ${swapped} -> ${rel ? 'relative' : 'absolute'} canary${later ? ' in layer 2' : ''}, ${after.length} after, ${fill.length} fillers`,
    layers,
    mustRefuse,
  };
}

/**
 * The reported attack: d/, FIFO d/victim (04777, owner 4242, a capability), a char device,
 * a setuid file, `fillers` directories (1700 in the report), then d -> canary.
 */
export function reportedAttack(canary: string, fillerCount = 1700): TEntry[] {
  return [
    { path: 'd/', type: 'dir' },
    { path: 'd/victim', type: 'fifo', mode: 0o4777, ...HOSTILE, xattrs: { 'security.capability': CAP_NET_RAW } },
    { path: 'd/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666, ...HOSTILE },
    { path: 'd/fresh-null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666, ...HOSTILE },
    { path: 'd/bin', data: 'x', mode: 0o4755, ...HOSTILE, xattrs: { 'security.capability': CAP_NET_RAW } },
    ...fillers(fillerCount, 'r'),
    { path: 'd', type: 'symlink', linkpath: canary },
  ];
}

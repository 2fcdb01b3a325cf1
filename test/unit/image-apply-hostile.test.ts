import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { exec } from '../../src/core/exec.js';
import { LayerApplier } from '../../src/images/apply.js';
import { applyTarStream } from '../../src/images/layers.js';
import { Canary } from '../helpers/canary.js';
import { reportedAttack, scenario } from '../helpers/hostile.js';
import { makeTar, type TEntry } from '../helpers/oci.js';

/**
 * Property test of layer application against generated hostile archives (helpers/hostile.ts):
 * every ancestor of devices, FIFOs, hard links, whiteouts and xattr'd files swapped for a
 * symlink to a canary directory outside the root, at every point relative to them. The
 * canary's owners, modes, times (ctime included), xattrs and entries must be unchanged,
 * and an archive that writes under the swapped path afterwards must be refused
 * (E_UNSAFE_ENTRY naming the entry).
 */
const root = process.getuid?.() === 0;
const hasTools = spawnSync('setfattr', ['--version']).status === 0 && spawnSync('getfattr', ['--version']).status === 0;
const skip = !root ? 'needs root (chown, mknod, security.* xattrs)' : !hasTools ? 'setfattr/getfattr (attr) missing' : false;

let work: string;
const canaries: Canary[] = [];

/** A fresh canary (removed after the file's tests) and its snapshot. */
function freshCanary(): { canary: Canary; baseline: string[] } {
  const canary = new Canary();
  canaries.push(canary);
  return { canary, baseline: canary.snapshot() };
}

before(() => {
  if (skip) return;
  // staged on a tmpfs like real builds (auto staging); the canary stays on /tmp, another filesystem
  work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'banger-hostile-'));
});

after(() => {
  for (const c of canaries) c.remove();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Apply layers to a fresh root; returns the error (if any) and the root. */
async function apply(layers: TEntry[][], label: string): Promise<{ err?: unknown; rootDir: string }> {
  const rootDir = join(work, label, 'rootfs');
  mkdirSync(rootDir, { recursive: true });
  const applier = new LayerApplier(rootDir, { exec });
  try {
    for (const [i, l] of layers.entries()) {
      applier.beginLayer(`sha256:${String(i).padStart(64, '0')}`);
      // fed in 1 KiB chunks, as a download delivers it
      const tar = makeTar(l);
      const chunks = (function* () {
        for (let o = 0; o < tar.length; o += 1024) yield tar.subarray(o, o + 1024);
      })();
      await applyTarStream(Readable.from(chunks), 'none', applier);
    }
    await applier.finish();
    return { rootDir };
  } catch (err) {
    return { err, rootDir };
  }
}

test('the reported attack (FIFO 04777 owner 4242 + xattr, char device, 1700 fillers, then d -> canary) is refused or contained; the canary is untouched', {
  skip,
}, async () => {
  const { canary, baseline } = freshCanary();
  const { err, rootDir } = await apply([reportedAttack(canary.dir)], 'reported');
  // d is replaced by the symlink: nothing under it is applied afterwards, so the layer applies
  if (err) throw err;
  assert.ok(lstatSync(join(rootDir, 'd')).isSymbolicLink());
  assert.deepEqual(canary.snapshot(), baseline, 'canary changed');
});

test('generated hostile archives: symlink swaps of every ancestor at every point never touch the canary', { skip }, async () => {
  const { canary, baseline } = freshCanary();
  const N = Number(process.env.BANGER_HOSTILE_SEEDS ?? 80);
  const seen = { refused: 0, applied: 0 };
  for (let seed = 1; seed <= N; seed++) {
    const sc = scenario(seed, canary.dir, join(work, `s${seed}`, 'rootfs'));
    const { err, rootDir } = await apply(sc.layers, `s${seed}`);
    assert.deepEqual(canary.snapshot(), baseline, `canary changed by ${sc.name}`);
    if (sc.mustRefuse) {
      assert.ok(isBangerError(err, 'E_UNSAFE_ENTRY'), `${sc.name}: expected E_UNSAFE_ENTRY, got ${String(err)}`);
      assert.match((err as Error).message, /layer sha256:0{12}.*entry 'a[^']*' .*symlink 'a/);
      seen.refused++;
    } else {
      assert.equal(err, undefined, `${sc.name}: ${String(err)}`);
      assert.ok(lstatSync(join(rootDir, sc.swapped)).isSymbolicLink(), `${sc.name}: ${sc.swapped} is the symlink in the result`);
      seen.applied++;
    }
  }
  assert.ok(seen.refused > N / 4 && seen.applied > N / 10, `both outcomes exercised: ${JSON.stringify(seen)}`);
  assert.deepEqual(readdirSync(canary.dir).sort(), ['bin', 'e', 'fifo', 'file', 'hl', 'link-to-victim', 'ln', 'null', 'passwd', 'sub', 'victim', 'x']);
});

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarReader, type TarEntry } from '../../src/core/tar-reader.js';
import { isRoot, missingTools } from '../helpers/daemon.js';
import { ensureDebianImageInRegistry, ensureDebianRootfsTar } from '../helpers/debootstrap.js';
import { ext4Rdump, ext4StatMany, fsck } from '../helpers/image-ext4.js';
import { imageService } from '../helpers/image-context.js';
import { TestRegistry } from '../helpers/registry.js';

/**
 * The debootstrap Debian bookworm image pulled from a local registry, checked entry by
 * entry against the rootfs tar it was made from: type, owner, mode, size, symlink target,
 * device numbers, file mtime, and the sha256 of every regular file. Paths the guest
 * injection writes are exempt from content checks.
 */
const skip = !isRoot() ? 'needs root' : missingTools('debootstrap', 'docker-registry', 'skopeo', 'mkfs.ext4', 'debugfs', 'setfattr');
const INJECTED = [/^etc\/systemd\/system\//, /^etc\/ssh\/sshd_config\.d\//, /^usr\/local\//];

let reg: TestRegistry;
before(
  async () => {
    if (skip) return;
    reg = await TestRegistry.start();
  },
  { timeout: 600_000 },
);
after(async () => reg?.stop());

interface Want {
  e: TarEntry;
  sha?: string;
}

async function readTar(path: string): Promise<Map<string, Want>> {
  const out = new Map<string, Want>();
  const r = new TarReader((e) => {
    const rel = e.path.replace(/^\.\//, '').replace(/\/$/, '');
    if (!rel) return undefined;
    const w: Want = { e };
    out.set(rel, w);
    if (e.type !== 'file') return undefined;
    const h = createHash('sha256');
    return { write: (c) => h.update(c), end: () => (w.sha = h.digest('hex')) };
  });
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) await r.push(c as Buffer);
  r.end();
  return out;
}

const TYPE: Record<string, string> = {
  file: 'regular',
  dir: 'directory',
  symlink: 'symlink',
  char: 'character special',
  block: 'block special',
  fifo: 'FIFO',
  link: 'regular',
};

test('debootstrap bookworm: pulled ext4 matches the rootfs tar entry by entry', { skip, timeout: 900_000 }, async () => {
  const ref = await ensureDebianImageInRegistry(reg.host);
  const want = await readTar(await ensureDebianRootfsTar());
  const { svc, cleanup } = imageService();
  const dump = mkdtempSync(join(tmpdir(), 'banger-rdump-'));
  try {
    const rec = await svc.pull({ ref, name: 'debian' });
    assert.equal(fsck(rec.rootfsPath), 0);
    const paths = [...want.keys()];
    const got = ext4StatMany(
      rec.rootfsPath,
      paths.map((p) => '/' + p),
    );
    ext4Rdump(rec.rootfsPath, dump);
    const problems: string[] = [];
    let files = 0;
    for (const [rel, w] of want) {
      const g = got.get('/' + rel);
      if (!g) {
        problems.push(`${rel}: missing`);
        continue;
      }
      const exempt = INJECTED.some((re) => re.test(rel));
      const e = w.e;
      if (g.type !== TYPE[e.type]) problems.push(`${rel}: type ${g.type} != ${e.type}`);
      if (g.uid !== e.uid || g.gid !== e.gid) problems.push(`${rel}: owner ${g.uid}:${g.gid} != ${e.uid}:${e.gid}`);
      if (e.type !== 'symlink' && e.type !== 'link' && (g.mode & 0o7777) !== e.mode)
        problems.push(`${rel}: mode ${(g.mode & 0o7777).toString(8)} != ${e.mode.toString(8)}`);
      if (e.type === 'symlink' && g.linkTarget !== undefined && g.linkTarget !== e.linkpath) problems.push(`${rel}: link ${g.linkTarget} != ${e.linkpath}`);
      if (e.type === 'symlink' && g.size !== Buffer.byteLength(e.linkpath)) problems.push(`${rel}: link size ${g.size}`);
      if ((e.type === 'char' || e.type === 'block') && (g.device?.[0] !== e.devmajor || g.device?.[1] !== e.devminor))
        problems.push(`${rel}: device ${g.device}`);
      if (e.type === 'file' && !exempt) {
        if (g.size !== e.size) problems.push(`${rel}: size ${g.size} != ${e.size}`);
        if (g.mtime !== Math.floor(e.mtime)) problems.push(`${rel}: mtime ${g.mtime} != ${Math.floor(e.mtime)}`);
        const sha = createHash('sha256')
          .update(readFileSync(join(dump, rel)))
          .digest('hex');
        if (sha !== w.sha) problems.push(`${rel}: content differs`);
        files++;
      }
      if (e.type === 'link') {
        const target = got.get('/' + e.linkpath.replace(/^\.\//, ''));
        if (target?.inode !== g.inode) problems.push(`${rel}: not a hard link of ${e.linkpath}`);
      }
    }
    assert.deepEqual(problems.slice(0, 20), [], `${problems.length} mismatches`);
    assert.ok(files > 5000, `compared ${files} regular files`);
    assert.ok(got.has('/usr/sbin/sshd') && got.has('/usr/lib/systemd/systemd'));
  } finally {
    rmSync(dump, { recursive: true, force: true });
    cleanup();
  }
});

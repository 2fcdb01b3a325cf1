import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb } from '../../src/core/db.js';
import { ContentStore } from '../../src/core/content-store.js';
import { PullStore, reconcilePullJournal } from '../../src/core/pull-store.js';

/** A real SQLite state (migrations applied) and blob directory in a temp dir. */
function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'banger-pullstore-'));
  const db = openDb(join(dir, 'banger.db'));
  const blobs = join(dir, 'blobs');
  const layout = { blobs, blob: (hex: string) => join(blobs, hex) };
  return { dir, db, blobs, layout, cleanup: () => (db.close(), rmSync(dir, { recursive: true, force: true })) };
}

const digestOf = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

async function put(store: ContentStore, data: string): Promise<string> {
  const b = Buffer.from(data);
  const digest = digestOf(b);
  await store.withLock(digest, async () => {
    const w = await store.writer({ digest, size: b.length });
    w.write(b);
    await w.commit();
  });
  return digest;
}

test('discard removes only what the pull added and nothing references or another pull uses', async () => {
  const s = setup();
  try {
    const plain = new ContentStore(s.layout, s.db);
    const before = await put(plain, 'there before the pull');
    const a = new PullStore(s.layout, s.db);
    const b = new PullStore(s.layout, s.db);
    assert.ok(await a.has(before));
    const added = await put(a, 'added by a, used by nobody else');
    const shared = await put(a, 'added by a, then used by pull b');
    const referenced = await put(a, 'added by a, referenced by a kernel meanwhile');
    assert.deepEqual([...a.added].sort(), [added, shared, referenced].sort(), 'only committed writes count as added');
    assert.ok(await b.has(shared));
    s.db.prepare("INSERT INTO blob_refs (digest, owner_kind, owner) VALUES (?, 'kernel', 'k')").run(referenced);
    assert.ok(PullStore.pinned(s.blobs).has(shared) && PullStore.pinned(s.blobs).has(added), 'running pulls pin what they use');

    const removed = await a.discard();
    assert.deepEqual(removed, [added]);
    assert.ok(!existsSync(plain.path(added)), 'added and unused: removed');
    for (const d of [before, shared, referenced]) assert.ok(existsSync(plain.path(d)), `${d} stays`);
    a.end();
    b.end();
    assert.equal(PullStore.pinned(s.blobs).size, 0, 'nothing pinned once both pulls ended');
  } finally {
    s.cleanup();
  }
});

test('a failed write is not "added"; prune keeps the blobs a running pull uses', async () => {
  const s = setup();
  try {
    const p = new PullStore(s.layout, s.db);
    const good = Buffer.from('good');
    const w = await p.writer({ digest: digestOf(Buffer.from('other')), size: good.length });
    w.write(good);
    await assert.rejects(w.commit(), /digest mismatch/);
    assert.equal(p.added.size, 0);
    const used = await put(p, 'config of a pull still running');
    const loose = await put(new ContentStore(s.layout, s.db), 'nobody uses me');
    const plain = new ContentStore(s.layout, s.db);
    const r = await plain.prune(PullStore.pinned(s.blobs));
    assert.equal(r.removed, 1);
    assert.ok(existsSync(plain.path(used)) && !existsSync(plain.path(loose)));
    p.end();
    assert.equal((await plain.prune(PullStore.pinned(s.blobs))).removed, 1, 'once the pull ended, its unreferenced blob is pruned');
    writeFileSync(join(s.blobs, 'README'), 'not a blob'); // non-blob files are never touched
    assert.equal((await plain.prune()).removed, 0);
  } finally {
    s.cleanup();
  }
});

test('a pull cut short by a crash: the journal lets the next start remove its blobs (not referenced ones)', async () => {
  const s = setup();
  try {
    const p = new PullStore(s.layout, s.db);
    const mine = await put(p, 'added by the pull that died');
    const shared = await put(p, 'added by it, but an image references it too');
    s.db.prepare("INSERT INTO blob_refs (digest, owner_kind, owner) VALUES (?, 'image', 'img')").run(shared);
    const plain = new ContentStore(s.layout, s.db);
    assert.equal((await plain.prune()).removed, 0, 'prune keeps what a running pull added (journal refs)');
    // the "crash": no discard(), no end(); a new daemon reconciles
    const removed = await reconcilePullJournal(plain, s.db);
    assert.deepEqual(removed, [mine]);
    assert.ok(!existsSync(plain.path(mine)) && existsSync(plain.path(shared)));
    assert.equal((s.db.prepare("SELECT count(*) AS n FROM blob_refs WHERE owner LIKE 'pull:%'").get() as { n: number }).n, 0, 'journal emptied');
    p.end();
  } finally {
    s.cleanup();
  }
});

import { randomBytes } from 'node:crypto';
import type { DB } from './db.js';
import type { Logger } from './log.js';
import type { Layout } from './paths.js';
import { ContentStore, type BlobWriter } from './content-store.js';

/** Owner (kind `cache`) of the journal references of a running pull: `pull:<12 hex>`. */
const PULL_OWNER_PREFIX = 'pull:';

/**
 * The content store as one pull (an image pull, a catalog kernel bundle, a Debian kernel's .debs) sees it. It remembers
 * - `added`: blobs this pull committed to the store (they were not there before), and
 * - `uses`: every digest this pull looked at, wrote or read (pinned while the pull runs).
 *
 * A pull that fails calls `discard()`: every blob it added that no image, kernel or cache
 * entry references (`blob_refs`) and that no other running pull uses is removed, under the
 * blob's lock, before the error is reported. Blobs that existed before the pull, or that
 * something else references, stay. `end()` (always, in `finally`, after the pull's owner row
 * and its references are committed) unpins.
 *
 * Journal: each added blob is also recorded in `blob_refs` as a `cache` reference owned by
 * `pull:<id>` while the pull runs (so `system prune` keeps it), and `end()`/`discard()` drop
 * those references. A daemon killed mid-pull leaves them behind: `reconcilePullJournal()` at
 * the next start removes the blobs of those dead pulls that nothing else references.
 */
export class PullStore extends ContentStore {
  /** Pulls in flight per store directory (a blob another pull uses is never discarded). */
  private static readonly active = new Map<string, Set<PullStore>>();
  readonly added = new Set<string>();
  readonly uses = new Set<string>();
  /** The `blob_refs` owner of this pull's journal (`cache` kind). */
  readonly owner = `${PULL_OWNER_PREFIX}${randomBytes(6).toString('hex')}`;
  private readonly dir: string;

  constructor(
    layout: Pick<Layout, 'blobs' | 'blob'>,
    private readonly database: DB,
  ) {
    super(layout, database);
    this.dir = layout.blobs;
    let set = PullStore.active.get(this.dir);
    if (!set) PullStore.active.set(this.dir, (set = new Set()));
    set.add(this);
  }

  /** Digests some running pull of this store directory uses (prune keeps them). */
  static pinned(blobsDir: string): Set<string> {
    const out = new Set<string>();
    for (const p of PullStore.active.get(blobsDir) ?? []) for (const d of p.uses) out.add(d);
    return out;
  }

  override path(digest: string): string {
    this.uses.add(digest);
    return super.path(digest);
  }

  override async has(digest: string): Promise<boolean> {
    this.uses.add(digest);
    return super.has(digest);
  }

  override async writer(expect: { digest: string; size?: number }): Promise<BlobWriter> {
    this.uses.add(expect.digest);
    const w = await super.writer(expect);
    const commit = w.commit.bind(w);
    w.commit = async () => {
      await commit();
      this.added.add(expect.digest);
      this.addRefs('cache', this.owner, [expect.digest]);
    };
    return w;
  }

  /** Remove what this pull added and nothing else needs; returns the digests removed. */
  async discard(log?: Logger): Promise<string[]> {
    const removed: string[] = [];
    const referenced = this.database.prepare("SELECT 1 FROM blob_refs WHERE digest = ? AND NOT (owner_kind = 'cache' AND owner = ?) LIMIT 1");
    const usedByOther = (digest: string) => [...(PullStore.active.get(this.dir) ?? [])].some((p) => p !== this && p.uses.has(digest));
    for (const digest of this.added) {
      await this.withLock(digest, async () => {
        if (referenced.get(digest, this.owner) || usedByOther(digest)) return;
        await this.remove(digest);
        removed.push(digest);
      });
    }
    this.added.clear();
    this.dropRefs('cache', this.owner);
    if (removed.length) log?.info('removed the blobs this failed pull added', { blobs: removed });
    return removed;
  }

  /** The pull is over (success or failure): its blobs are no longer pinned. */
  end(): void {
    this.dropRefs('cache', this.owner);
    const set = PullStore.active.get(this.dir);
    set?.delete(this);
    if (set?.size === 0) PullStore.active.delete(this.dir);
  }
}

/**
 * At daemon start (nothing is pulling yet): the journal of pulls a crash cut short. Each blob
 * they added that nothing else references is removed; their `cache` references are dropped.
 * Returns the digests removed.
 */
export async function reconcilePullJournal(store: ContentStore, db: DB): Promise<string[]> {
  const rows = db.prepare("SELECT digest, owner FROM blob_refs WHERE owner_kind = 'cache' AND owner LIKE 'pull:%'").all() as {
    digest: string;
    owner: string;
  }[];
  const removed: string[] = [];
  const others = db.prepare("SELECT 1 FROM blob_refs WHERE digest = ? AND NOT (owner_kind = 'cache' AND owner LIKE 'pull:%') LIMIT 1");
  for (const digest of new Set(rows.map((r) => r.digest))) {
    if (others.get(digest)) continue;
    await store.remove(digest);
    removed.push(digest);
  }
  db.prepare("DELETE FROM blob_refs WHERE owner_kind = 'cache' AND owner LIKE 'pull:%'").run();
  return removed;
}

import { mkdtempSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigSchema, type Config } from '../../src/core/config.js';
import { openDb } from '../../src/core/db.js';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { layout } from '../../src/core/paths.js';
import type { Context } from '../../src/core/context.js';
import { ImageService } from '../../src/images/service.js';
import { KernelService } from '../../src/kernels/service.js';
import { VmTableUsage } from '../../src/vms/usage.js';
import { ramPrefix } from '../../src/images/staging.js';

/** An in-process ImageService over a temp BANGER_ROOT (real db, real exec). */
export function imageService(cfg: Record<string, unknown> = {}): { svc: ImageService; ctx: Context; root: string; cleanup(): void } {
  const root = mkdtempSync(join(tmpdir(), 'banger-img-'));
  const lay = layout(root, join(root, 'bangerd.sock'));
  const config: Config = { ...ConfigSchema.parse(cfg), root, socket: lay.socket, configFile: join(root, 'config.json') };
  const db = openDb(lay.db);
  const ctx: Context = { config, layout: lay, db, log: nullLogger, exec };
  const vmUsage = new VmTableUsage(db);
  const svc = new ImageService(ctx, { kernels: new KernelService(ctx, { vmUsage }), vmUsage });
  return {
    svc,
    ctx,
    root,
    cleanup() {
      db.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

class ImageServicePrefix {
  readonly prefix: string;
  constructor(ctx: Context) {
    this.prefix = ramPrefix(ctx.layout.root);
  }
}

/** What a failed build may leave: nothing in tmp/ or RAM staging (/dev/shm), no *.tmp blobs, no image dirs, no rows. */
export function leftovers(ctx: Context): string[] {
  const out: string[] = [];
  const ls = (d: string) => (existsSync(d) ? readdirSync(d) : []);
  out.push(...ls(ctx.layout.tmp).map((n) => `tmp/${n}`));
  out.push(
    ...ls(ctx.layout.blobs)
      .filter((n) => n.endsWith('.tmp'))
      .map((n) => `blobs/${n}`),
  );
  out.push(...ls(ctx.layout.images).map((n) => `images/${n}`));
  const ram = new ImageServicePrefix(ctx).prefix;
  out.push(
    ...ls('/dev/shm')
      .filter((n) => n.startsWith(ram))
      .map((n) => `/dev/shm/${n}`),
  );
  const rows = ctx.db.prepare('SELECT name FROM images').all() as { name: string }[];
  out.push(...rows.map((r) => `row:${r.name}`));
  return out;
}

import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig, type Config } from '../core/config.js';
import { openDb } from '../core/db.js';
import { BangerError, errorMessage } from '../core/errors.js';
import { exec, tracedExec } from '../core/exec.js';
import { createLogger } from '../core/log.js';
import { installCrashGuards } from '../core/ops.js';
import { ContentStore } from '../core/content-store.js';
import { reconcilePullJournal } from '../core/pull-store.js';
import { layout, type Layout } from '../core/paths.js';
import { bind, type HandlersFor } from '../rpc/bind.js';
import { RpcServer } from '../rpc/server.js';
import type { Context } from '../core/context.js';
import { createServices, serviceMethods } from './services.js';
import { bangerGid } from '../core/group.js';
import { acquireRootLock, type RootLock } from './lock.js';
import { securePermissions } from './perms.js';
import { claimSocketPath } from '../rpc/socketpath.js';
import { instanceId } from '../network/owner.js';
import { ConsoleRotator } from '../vms/console-rotator.js';
import { teardown } from './teardown.js';
import { BANGER_VERSION as VERSION } from '../core/version.js';

/** Start bangerd: open state, reconcile, serve. Resolves with a handle that stops it. */
export async function startDaemon(env: NodeJS.ProcessEnv = process.env, opts: { foreground?: boolean } = {}) {
  const config = loadConfig(env);
  const lay = layout(config.root, config.socket);
  const gid = await bangerGid();
  // One daemon per root: the lock comes before anything under the root is cleaned or changed,
  // and the socket path is checked before anything else (only a dead socket is ever removed).
  await mkdir(lay.root, { recursive: true, mode: 0o700 });
  const lock = await acquireRootLock(lay.root, lay.lockFile);
  try {
    await claimSocketPath(lay.socket);
    await securePermissions(lay, gid);
    return await serve(config, lay, gid, lock, opts);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

/** Open state, reconcile and listen, with the root's lock held. */
async function serve(config: Config, lay: Layout, gid: number | undefined, lock: RootLock, opts: { foreground?: boolean }) {
  const log = createLogger({ file: lay.logFile, stderr: opts.foreground ?? true, base: { pid: process.pid } });
  const db = openDb(lay.db);
  const ctx: Context = { config, layout: lay, db, log, exec: tracedExec(exec, log) };
  await cleanTmp(lay.tmp, log);
  const services = createServices(ctx);
  const sealed = services.images.creds.sealLegacy();
  if (sealed) log.info('sealed stored registry passwords', { count: sealed });
  const startedAt = new Date();
  const daemonHandlers: HandlersFor<'daemon.'> = {
    'daemon.status': async () => ({
      version: VERSION,
      pid: process.pid,
      root: lay.root,
      socket: lay.socket,
      configFile: config.configFile,
      logFile: lay.logFile,
      startedAt: startedAt.toISOString(),
      uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000),
      schemaVersion: db.pragma('user_version', { simple: true }) as number,
      /** The id this instance marks its taps, bridge, NAT rules and QEMU processes with. */
      instanceId: instanceId(db),
      node: { path: process.execPath, version: process.version },
    }),
    'daemon.teardown': async (_p, op) => teardown(services, log, op),
    'daemon.shutdown': async () => {
      setTimeout(() => void stop(), 20);
      return { stopping: true as const };
    },
  };
  const methods = { ...serviceMethods(services), ...bind(daemonHandlers) };
  // Reconcile on start: each domain brings the host back in line with the database.
  for (const [domain, step] of [
    ['kernels', () => services.kernels.reconcile()],
    ['vms', () => services.vms.reconcile()],
    [
      'store',
      () =>
        reconcileStore(
          ctx,
          services.images.list().map((i) => i.name),
        ),
    ],
  ] as const) {
    try {
      const result = await step();
      log.info('reconcile done', { domain, ...(result && typeof result === 'object' ? result : {}) });
    } catch (e) {
      log.error('reconcile failed', { domain, error: errorMessage(e) });
    }
  }
  // Lifetimes: after reconcile, so a deadline that passed while no daemon ran is handled now.
  services.vms.startReaper();
  // Console logs stay under their cap while the daemon runs; the first sweep catches up on
  // what adopted VMs wrote while it was away.
  const consoles = new ConsoleRotator({ vmsDir: lay.vms, maxBytes: config.vm.consoleLogMaxBytes, log });
  consoles.start();
  const server = new RpcServer({ socketPath: lay.socket, methods, log, gid });
  await server.listen();
  await writeFile(lay.pidFile, `${process.pid}\n`);
  log.info('bangerd listening', { socket: lay.socket, root: lay.root, version: VERSION });

  let stopping: Promise<void> | undefined;
  async function stop(): Promise<void> {
    stopping ??= (async () => {
      log.info('bangerd stopping');
      await services.vms.stopReaper();
      consoles.stop();
      services.network.dns.close();
      await server.close();
      await rm(lay.pidFile, { force: true });
      db.close();
      await lock.release();
    })();
    return stopping;
  }
  return { ctx, services, stop };
}

/**
 * Remove scratch entries left by a previous daemon that died mid-operation. Only the daemon
 * writes under tmp/, and at start nothing of ours is running, so everything there is stale.
 */
async function cleanTmp(dir: string, log: ReturnType<typeof createLogger>): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const p = join(dir, name);
    await rm(p, { recursive: true, force: true });
    log.info('removed stale temp entry', { path: p });
  }
}

/**
 * A dead operation's debris outside tmp/: blob temp files (a download cut by the crash) and image
 * directories without a row (a crash between landing the ext4 and committing its row). Verified
 * blobs stay: they are complete, and prune frees them once nothing references them.
 */
async function reconcileStore(ctx: Context, imageNames: string[]): Promise<{ removedTemps: number; removedImageDirs: string[]; removedPullBlobs: number }> {
  const store = new ContentStore(ctx.layout, ctx.db);
  const temps = await store.staleTemps();
  for (const t of temps) await rm(t.file, { force: true });
  const pullBlobs = await reconcilePullJournal(store, ctx.db); // blobs of pulls a crash cut short
  const rows = new Set(imageNames);
  const removedImageDirs: string[] = [];
  for (const name of await readdir(ctx.layout.images).catch(() => [] as string[])) {
    if (rows.has(name)) continue;
    await rm(join(ctx.layout.images, name), { recursive: true, force: true });
    removedImageDirs.push(name);
  }
  return { removedTemps: temps.length, removedImageDirs, removedPullBlobs: pullBlobs.length };
}

export async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(
      'bangerd: the banger daemon (runs as root).\n\nUsage: bangerd\n\nEnvironment:\n  BANGER_ROOT     state directory (default /var/lib/banger)\n  BANGER_SOCKET   socket path (default /run/banger/bangerd.sock, or $BANGER_ROOT/bangerd.sock)\n  BANGER_CONFIG   config file (default /etc/banger/config.json, or $BANGER_ROOT/config.json)\n  BANGER_LOG_LEVEL debug|info|warn|error\n\nUsually started by systemd (banger system install) or by the banger CLI on demand.\n',
    );
    return;
  }
  // Handlers first: a signal during start-up stops the daemon once it is up (releasing its
  // lock and socket) instead of killing it half-way.
  let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let pending: string | undefined;
  const onSignal = (sig: string) => {
    if (!d) return void (pending ??= sig);
    d.ctx.log.info('signal received', { signal: sig });
    void d.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  try {
    d = await startDaemon(process.env, { foreground: true });
    installCrashGuards(d.ctx.log);
    if (pending) onSignal(pending);
  } catch (e) {
    const be = e instanceof BangerError ? e : undefined;
    process.stderr.write(`bangerd: ${errorMessage(e)}${be?.hint ? `\nhint: ${be.hint}` : ''}\n`);
    process.exit(1);
  }
}

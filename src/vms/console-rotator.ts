import { watch, type FSWatcher } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { rotateIfOver } from './console-log.js';
import { vmFiles } from './files.js';
import { sleep } from './proc.js';

/** Least time between two checks of one console that writes keep triggering. */
const CHECK_GAP_MS = 20;

/**
 * Keeps every VM's console log under its cap while the daemon runs (console-log.ts says how a
 * rotation works). Each VM directory under `vmsDir` is swept every `intervalMs` (and at once
 * on `start`, which covers VMs adopted after a daemon restart: what they wrote meanwhile is
 * rotated then), and each console.log is watched (fs.watch, inotify) so a write past the cap
 * is rotated at once rather than at the next sweep. Checks of one console never overlap; a
 * change seen during a check runs one more check after it.
 *
 * Bound: console.log holds at most `maxBytes` plus what the guest writes during one check
 * (20 ms between checks while writes keep coming, plus a stat, or a rotation's copy of
 * `maxBytes`) or, where inotify says nothing, during one sweep interval; console.log.1 at
 * most 2 x `maxBytes` (the newest `maxBytes` and what arrived while they were copied).
 */
export class ConsoleRotator {
  private timer?: NodeJS.Timeout;
  /** Watched consoles: path → the watcher and the inode it watches. */
  private readonly watched = new Map<string, { w: FSWatcher; ino: number }>();
  private readonly checking = new Map<string, { again: boolean }>();
  private sweeping?: Promise<void>;
  /** Rotations done (tests, diagnostics). */
  rotations = 0;

  constructor(
    private readonly o: {
      vmsDir: string;
      maxBytes: number;
      log: Logger;
      /** Sweep period; default 1000 ms. */
      intervalMs?: number;
    },
  ) {}

  start(): void {
    if (this.timer) return;
    void this.sweep();
    this.timer = setInterval(() => void this.sweep(), this.o.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    for (const { w } of this.watched.values()) w.close();
    this.watched.clear();
  }

  /** One pass over every VM directory: (re)watch its console and check its size. */
  sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      const names = await readdir(this.o.vmsDir).catch(() => [] as string[]);
      const seen = new Set<string>();
      for (const name of names) {
        const path = vmFiles(`${this.o.vmsDir}/${name}`).console;
        seen.add(path);
        await this.ensureWatch(path);
        await this.check(path);
      }
      for (const [path, { w }] of this.watched) {
        if (seen.has(path)) continue;
        w.close();
        this.watched.delete(path);
      }
    })().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  /** Watch `path` (again when it was replaced: a VM start makes a new console). */
  private async ensureWatch(path: string): Promise<void> {
    const ino = (await stat(path).catch(() => undefined))?.ino;
    const cur = this.watched.get(path);
    if (cur && cur.ino === ino) return;
    cur?.w.close();
    this.watched.delete(path);
    if (ino === undefined || !this.timer) return;
    try {
      const w = watch(path, { persistent: false }, () => void this.check(path));
      w.on('error', () => {
        w.close();
        if (this.watched.get(path)?.w === w) this.watched.delete(path);
      });
      this.watched.set(path, { w, ino });
    } catch {
      /* gone meanwhile, or no inotify: the sweep still checks it */
    }
  }

  /** Rotate `path` if it is over the cap; a check already running runs once more after. */
  check(path: string): Promise<void> | undefined {
    const running = this.checking.get(path);
    if (running) {
      running.again = true;
      return undefined;
    }
    const state = { again: false };
    this.checking.set(path, state);
    return (async () => {
      try {
        for (;;) {
          state.again = false;
          if (((await stat(path).catch(() => undefined))?.size ?? 0) > this.o.maxBytes) {
            const size = await rotateIfOver(path, this.o.maxBytes).catch((e) => {
              this.o.log.warn('console log rotation failed', { console: path, error: errorMessage(e) });
              return 0;
            });
            if (size) {
              this.rotations++;
              this.o.log.debug('console log rotated', { console: path, bytes: size, maxBytes: this.o.maxBytes });
            }
          }
          if (!state.again) break;
          await sleep(CHECK_GAP_MS); // a guest printing without pause: one stat per gap, not per write
        }
      } finally {
        this.checking.delete(path);
      }
    })();
  }
}

import { humanSize } from '../core/fsutil.js';
import type { ProgressEvent } from '../core/operation.js';

/**
 * Renders progress events on stderr. On a TTY: one live line per key (layer, download) with
 * a bar, bytes and total. Otherwise: one line per stage change (never a flood of updates).
 */
export class ProgressRenderer {
  private readonly tty: boolean;
  private readonly lines = new Map<string, string>();
  private drawn = 0;
  private lastStage = new Map<string, string>();
  private lastDraw = 0;

  constructor(private readonly out: NodeJS.WriteStream) {
    this.tty = !!out.isTTY && !process.env.BANGER_NO_TTY;
  }

  update(ev: ProgressEvent): void {
    const key = ev.key ?? ev.stage;
    if (!this.tty) {
      const sig = `${ev.stage}|${ev.message ?? ''}|${ev.done ? 'done' : ''}`;
      if (this.lastStage.get(key) === sig) return;
      this.lastStage.set(key, sig);
      const t = ev.elapsedMs !== undefined ? `[${(ev.elapsedMs / 1000).toFixed(1)}s] ` : '';
      const size = ev.done && ev.total ? ` (${humanSize(ev.total)})` : '';
      this.out.write(`${t}${ev.stage}${ev.key && ev.key !== ev.stage ? ` ${ev.key}` : ''}: ${ev.message ?? (ev.done ? 'done' : 'started')}${size}\n`);
      return;
    }
    this.lines.set(key, formatLine(ev));
    const now = Date.now();
    if (ev.done || now - this.lastDraw > 80) this.draw();
  }

  note(msg: string): void {
    if (this.tty) this.clear();
    this.out.write(msg + '\n');
    if (this.tty) this.draw();
  }

  stop(): void {
    if (this.tty && this.lines.size) this.draw();
  }

  private clear(): void {
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw(): void {
    this.lastDraw = Date.now();
    this.clear();
    const width = this.out.columns || 100;
    for (const l of this.lines.values()) this.out.write(l.slice(0, width - 1) + '\n');
    this.drawn = this.lines.size;
  }
}

function formatLine(ev: ProgressEvent): string {
  const label = `${ev.stage}${ev.key && ev.key !== ev.stage ? ' ' + ev.key : ''}`.padEnd(28);
  const t = ev.elapsedMs !== undefined ? ` ${(ev.elapsedMs / 1000).toFixed(1)}s` : '';
  if (ev.done) return `✔ ${label} ${ev.message ?? 'done'}${ev.total ? ` ${humanSize(ev.total)}` : ''}${t}`;
  if (ev.total && ev.current !== undefined) {
    const frac = Math.min(1, ev.current / ev.total);
    const n = Math.round(frac * 24);
    return `  ${label} [${'#'.repeat(n)}${'-'.repeat(24 - n)}] ${humanSize(ev.current)} / ${humanSize(ev.total)}${ev.message ? ' ' + ev.message : ''}`;
  }
  if (ev.current !== undefined) return `  ${label} ${humanSize(ev.current)}${ev.message ? ' ' + ev.message : ''}`;
  return `  ${label} ${ev.message ?? '…'}${t}`;
}

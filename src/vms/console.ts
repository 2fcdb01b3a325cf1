import { StringDecoder } from 'node:string_decoder';
import { consoleEnd, readConsoleBytes, readFrom } from './console-log.js';
import { sleep } from './proc.js';

export { readFrom };

/** The last `lines` lines of the console (for error messages), across a rotation. */
export async function tail(path: string, lines = 15): Promise<string> {
  const end = await consoleEnd(path);
  const r = await readFrom(path, Math.max(0, end - 8192), 8192);
  return r.data.split('\n').slice(-lines).join('\n');
}

/** Kernel handing over to userspace (initramfs or init=), as printed on the serial console. */
export const INIT_MARKER = /Run \S+ as init process|Freeing unused kernel image/;

/** A console line longer than this is cut (the rest, up to its newline, is dropped). */
export const MAX_LINE = 8192;

/**
 * What readiness learns from the console, line by line: the kernel's hand-over to userspace,
 * and what the guest's first-boot script (src/guest/files/banger-first-boot.sh) says: it logs
 * "banger-first-boot: step <name>" per step and "banger-first-boot: error: …" when a step
 * fails, followed by "banger-first-boot: hint: …" when it has one. `installing` is true between
 * `step install` and `step exec-init` (systemd and an SSH server being installed with the
 * guest's package manager: minutes under TCG); `progress` is the latest install line.
 */
export class BootWatch {
  init = false;
  installing = false;
  error?: string;
  hint?: string;
  progress?: string;
  private errorLine = false;

  /** The error line was the last complete line: its hint, if any, may still be on its way. */
  get awaitingHint(): boolean {
    return this.errorLine;
  }

  line(raw: string): void {
    const l = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (this.errorLine) {
      this.errorLine = false;
      const h = /^banger-first-boot: hint: ([^\r]*)/.exec(l);
      if (h) this.hint = h[1];
    }
    if (!this.init && INIT_MARKER.test(l)) this.init = true;
    if (this.error === undefined) {
      const m = /banger-first-boot: error: ([^\r]*)/.exec(l);
      if (m) {
        this.error = m[1];
        this.errorLine = true;
      }
    }
    const install = l.lastIndexOf('banger-first-boot: step install');
    const exec = l.lastIndexOf('banger-first-boot: step exec-init');
    if (install >= 0 || exec >= 0) this.installing = install > exec;
    for (const part of l.split('\r')) {
      const p = installLine(part);
      if (p) this.progress = p;
    }
  }

  firstBoot(): { installing: boolean; error?: string; hint?: string } {
    return { installing: this.installing, error: this.error, ...(this.hint !== undefined ? { hint: this.hint } : {}) };
  }
}

/** The install progress a console line shows (trimmed to 100 characters), if any. */
function installLine(line: string): string | undefined {
  const l = line.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').trim();
  if (!/^(banger-first-boot: (step |running: |package )|Get:\d+ |Unpacking |Setting up |\(\d+\/\d+\) Installing |Installing |Fetched )/.test(l))
    return undefined;
  return l.length > 100 ? l.slice(0, 97) + '...' : l;
}

/**
 * Splits console bytes into lines for a BootWatch, with a bounded buffer: a line longer than
 * MAX_LINE characters is cut there and the rest of it, up to its newline, dropped.
 */
export class LineSplitter {
  private readonly decoder = new StringDecoder('utf8');
  private pending = '';
  private dropping = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly maxLine = MAX_LINE,
  ) {}

  push(chunk: Buffer | string): void {
    let text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    while (text.length) {
      const nl = text.indexOf('\n');
      const piece = nl < 0 ? text : text.slice(0, nl);
      text = nl < 0 ? '' : text.slice(nl + 1);
      if (!this.dropping) {
        this.pending += piece.slice(0, this.maxLine - this.pending.length);
        if (this.pending.length >= this.maxLine && nl < 0) {
          this.onLine(this.pending);
          this.pending = '';
          this.dropping = true;
        }
      }
      if (nl >= 0) {
        if (!this.dropping) this.onLine(this.pending);
        this.pending = '';
        this.dropping = false;
      }
    }
  }

  /** The last line when it has no newline yet. */
  end(): void {
    this.pending += this.decoder.end();
    if (this.pending && !this.dropping) this.onLine(this.pending);
    this.pending = '';
  }
}

/** Most a scan reads per `poll` (the next poll goes on from there). */
const SCAN_PER_POLL = 16 << 20;

/**
 * Reads a VM's console incrementally from where it stopped (across rotations, console-log.ts)
 * into a BootWatch, so markers are found however much came before them. Polls never overlap.
 */
export class ConsoleScanner {
  readonly watch = new BootWatch();
  private offset = 0;
  private readonly lines = new LineSplitter((l) => this.watch.line(l));
  private running?: Promise<BootWatch>;

  constructor(private readonly path: string) {}

  poll(): Promise<BootWatch> {
    this.running ??= this.scan().finally(() => (this.running = undefined));
    return this.running;
  }

  private async scan(): Promise<BootWatch> {
    for (let read = 0; read < SCAN_PER_POLL; ) {
      const r = await readConsoleBytes(this.path, this.offset);
      this.offset = r.offset;
      if (!r.data.length) break;
      read += r.data.length;
      this.lines.push(r.data);
    }
    return this.watch;
  }
}

/** Resolves true once the scanner has seen `seen(watch)`, false when `until()` says stop. */
export async function waitForConsole(scanner: ConsoleScanner, seen: (w: BootWatch) => boolean, until: () => boolean | Promise<boolean>): Promise<boolean> {
  while (!(await until())) {
    if (seen(await scanner.poll())) return true;
    await sleep(200);
  }
  return false;
}

/** The first-boot state of a whole console text (see BootWatch). */
export function firstBootState(consoleText: string): { installing: boolean; error?: string; hint?: string } {
  const w = new BootWatch();
  const s = new LineSplitter((l) => w.line(l));
  s.push(consoleText);
  s.end();
  return w.firstBoot();
}

/** The latest install progress line of a whole console text (see BootWatch), or undefined. */
export function installProgress(consoleText: string): string | undefined {
  const w = new BootWatch();
  const s = new LineSplitter((l) => w.line(l));
  s.push(consoleText);
  s.end();
  return w.progress;
}

import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A hostile HTTP/1.1 server written on raw `net` sockets, for the download regression tests.
 * Each path has a mode:
 * - `ok`: a correct response (Content-Length, keep-alive);
 * - `fin-mid-body`: `Connection: close`, half the body, then FIN (the undici 7 crash setup);
 * - `rst-mid-body`: half the body, then a TCP RST;
 * - `no-headers`: reads the request and never answers;
 * - `trickle`: the headers, then one body byte every `trickleMs` (below any idle timeout);
 * - `huge-headers`: 256 KiB of response headers;
 * - `long-body`: more bytes than its Content-Length, then FIN;
 * - `short-body`: fewer bytes than its Content-Length, then FIN.
 * Paths not in the route table are served `ok` from `dir` (when set), else 404.
 * Run in a network namespace as a child process (`HostileServer.start(netns)`); the routes
 * live in a JSON file re-read on every request, and every request line is appended to a log.
 */

export type Mode = 'ok' | 'fin-mid-body' | 'rst-mid-body' | 'no-headers' | 'trickle' | 'huge-headers' | 'long-body' | 'short-body';
export const HOSTILE_MODES: Exclude<Mode, 'ok'>[] = ['fin-mid-body', 'rst-mid-body', 'no-headers', 'trickle', 'huge-headers', 'long-body', 'short-body'];

export interface Route {
  /** File holding the body. */
  file: string;
  mode: Mode;
  headers?: Record<string, string>;
}

export interface Routes {
  routes: Record<string, Route>;
  /** Fallback directory served `ok` for other paths. */
  dir?: string;
  trickleMs?: number;
}

function respond(sock: Socket, path: string, cfg: Routes): void {
  let route = cfg.routes[path];
  if (!route && cfg.dir) {
    const rel = normalize(path).replace(/^\/+/, '');
    const f = join(cfg.dir, rel);
    if (!rel.startsWith('..') && existsSync(f) && statSync(f).isFile()) route = { file: f, mode: 'ok' };
  }
  if (!route) {
    sock.write('HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found');
    return;
  }
  const body = readFileSync(route.file);
  const extra = Object.entries(route.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const head = (more = '') => `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n${extra}${more}\r\n`;
  const half = body.subarray(0, Math.max(1, Math.floor(body.length / 2)));
  switch (route.mode) {
    case 'ok':
      sock.write(head());
      sock.write(body);
      return;
    case 'fin-mid-body':
      sock.write(head('Connection: close\r\n'));
      sock.write(half, () => setTimeout(() => sock.end(), 300));
      return;
    case 'rst-mid-body':
      sock.write(head());
      sock.write(half, () => setTimeout(() => sock.resetAndDestroy(), 300));
      return;
    case 'no-headers':
      return;
    case 'trickle': {
      sock.write(head());
      let i = 0;
      const t = setInterval(() => {
        if (sock.destroyed || i >= body.length) return clearInterval(t);
        sock.write(body.subarray(i, i + 1));
        i++;
      }, cfg.trickleMs ?? 500);
      sock.on('close', () => clearInterval(t));
      return;
    }
    case 'huge-headers':
      sock.write(
        `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n${'X-Junk: ' + 'a'.repeat(1000) + '\r\n'}`.repeat(1) +
          Array.from({ length: 256 }, (_, n) => `X-Junk-${n}: ${'a'.repeat(1000)}\r\n`).join('') +
          '\r\n',
      );
      sock.write(body);
      return;
    case 'long-body':
      sock.write(head('Connection: close\r\n'));
      sock.write(Buffer.concat([body, Buffer.alloc(64 * 1024, 0x41)]), () => sock.end());
      return;
    case 'short-body':
      sock.write(head());
      sock.write(body.subarray(0, body.length - Math.min(100, body.length - 1)), () => setTimeout(() => sock.end(), 300));
      return;
  }
}

/** Serve `routesFile` on 127.0.0.1 (port 0); logs "METHOD PATH" lines to `logFile`. */
export async function serveHostile(routesFile: string, logFile: string): Promise<{ port: number; close(): void }> {
  const socks = new Set<Socket>();
  const server = createServer((sock) => {
    socks.add(sock);
    sock.on('close', () => socks.delete(sock));
    sock.on('error', () => {});
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        const [method, target] = head.split('\r\n')[0]!.split(' ');
        const path = decodeURIComponent((target ?? '/').split('?')[0]!);
        appendFileSync(logFile, `${method} ${path}\n`);
        respond(sock, path, JSON.parse(readFileSync(routesFile, 'utf8')) as Routes);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    close() {
      for (const s of socks) s.destroy();
      server.close();
    },
  };
}

/** The server as a child process inside network namespace `netns` (or the host's when absent). */
export class HostileServer {
  port = 0;
  private proc?: ChildProcess;
  constructor(
    private readonly dir: string,
    private cfg: Routes = { routes: {} },
  ) {}

  get routesFile(): string {
    return join(this.dir, 'routes.json');
  }
  get logFile(): string {
    return join(this.dir, 'requests.log');
  }

  async start(netns?: string): Promise<void> {
    this.set(this.cfg);
    writeFileSync(this.logFile, '');
    const script = fileURLToPath(import.meta.url);
    const argv = [...(netns ? ['ip', 'netns', 'exec', netns] : []), process.execPath, script, this.routesFile, this.logFile];
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
    this.proc = p;
    this.port = await new Promise<number>((resolve, reject) => {
      let out = '';
      p.stdout!.on('data', (d) => {
        out += d;
        const m = /^port (\d+)\n/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      p.once('exit', (c) => reject(new Error(`hostile server exited (${c})`)));
    });
  }

  set(cfg: Routes): void {
    this.cfg = cfg;
    writeFileSync(this.routesFile, JSON.stringify(cfg));
  }

  /** Change one path's route (others kept). */
  route(path: string, route: Route): void {
    this.set({ ...this.cfg, routes: { ...this.cfg.routes, [path]: route } });
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** How many requests for `path` (exact) or starting with `prefix` were served. */
  count(path: string, prefix = false): number {
    const lines = readFileSync(this.logFile, 'utf8').split('\n').filter(Boolean);
    return lines.filter((l) => {
      const p = l.slice(l.indexOf(' ') + 1);
      return prefix ? p.startsWith(path) : p === path;
    }).length;
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    const done = new Promise((r) => p.once('exit', r));
    p.kill('SIGTERM');
    await done;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { port } = await serveHostile(process.argv[2]!, process.argv[3]!);
  process.stdout.write(`port ${port}\n`);
  process.on('SIGTERM', () => process.exit(0));
}

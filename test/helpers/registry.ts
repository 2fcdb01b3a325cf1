import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createSign, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) bound to
 * 127.0.0.1 on a free port, with its own config and storage, in one of three modes:
 * - 'none'      no auth;
 * - 'htpasswd'  Basic auth (bcrypt file made with `htpasswd -Bbn`);
 * - 'token'     Bearer tokens from a token server in this process (127.0.0.1) issuing RS256
 *               JWTs with an x5c chain signed by a CA made with openssl for this run.
 * Everything lives in one temp dir removed by `stop()`.
 */
export type AuthMode = 'none' | 'htpasswd' | 'token';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function run(argv: string[], opts: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(argv[0]!, argv.slice(1), { cwd: opts.cwd, input: opts.input, encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export class TestRegistry {
  proc?: ChildProcess;
  tokenServer?: Server;
  log = '';
  /** Requests the token server saw (for assertions). */
  tokenRequests: { authorized: boolean; scope: string | null }[] = [];

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly mode: AuthMode,
    readonly users: Record<string, string>,
    readonly anonymousPull: boolean,
  ) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }
  get url(): string {
    return `http://${this.host}`;
  }
  get storage(): string {
    return join(this.dir, 'storage');
  }

  /** Network namespace the registry (and `push`) runs in; unset = this process's namespace. 'none' auth only. */
  netns?: string;

  private wrap(argv: string[]): string[] {
    return this.netns ? ['ip', 'netns', 'exec', this.netns, ...argv] : argv;
  }

  static async start(opts: { auth?: AuthMode; users?: Record<string, string>; anonymousPull?: boolean; netns?: string } = {}): Promise<TestRegistry> {
    const dir = mkdtempSync(join(tmpdir(), 'banger-registry-'));
    const port = await freePort();
    const reg = new TestRegistry(dir, port, opts.auth ?? 'none', opts.users ?? { tester: 'secret-pass' }, opts.anonymousPull ?? false);
    if (opts.netns && (opts.auth ?? 'none') !== 'none') throw new Error('TestRegistry: netns supports auth none only');
    reg.netns = opts.netns;
    try {
      await reg.boot();
    } catch (e) {
      await reg.stop();
      throw e;
    }
    return reg;
  }

  private async boot(): Promise<void> {
    let auth = '';
    if (this.mode === 'htpasswd') {
      const lines = Object.entries(this.users).map(([u, p]) => run(['htpasswd', '-Bbn', u, p]).trim());
      writeFileSync(join(this.dir, 'htpasswd'), lines.join('\n') + '\n');
      auth = `auth:\n  htpasswd:\n    realm: banger-test\n    path: ${join(this.dir, 'htpasswd')}\n`;
    } else if (this.mode === 'token') {
      const tport = await this.startTokenServer();
      auth = `auth:\n  token:\n    realm: http://127.0.0.1:${tport}/token\n    service: banger-test-registry\n    issuer: banger-test-issuer\n    rootcertbundle: ${join(this.dir, 'ca.pem')}\n`;
    }
    const cfg = `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${this.storage}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${this.port}\n${auth}`;
    writeFileSync(join(this.dir, 'config.yml'), cfg);
    const serve = this.wrap(['/usr/bin/docker-registry', 'serve', join(this.dir, 'config.yml')]);
    this.proc = spawn(serve[0]!, serve.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => (this.log += d));
    this.proc.stderr!.on('data', (d) => (this.log += d));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`docker-registry exited: ${this.log}`);
      try {
        if (this.netns) {
          const r = spawnSync('ip', ['netns', 'exec', this.netns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `${this.url}/v2/`], {
            encoding: 'utf8',
          });
          if (r.stdout === '200') return;
          throw new Error('not yet');
        }
        const res = await fetch(`${this.url}/v2/`);
        if (res.status === 200 || res.status === 401) return;
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`docker-registry did not come up: ${this.log}`);
  }

  private async startTokenServer(): Promise<number> {
    const d = this.dir;
    run([
      'openssl',
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(d, 'ca.key'),
      '-out',
      join(d, 'ca.pem'),
      '-days',
      '2',
      '-subj',
      '/CN=banger-test-ca',
    ]);
    run(['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(d, 'leaf.key'), '-out', join(d, 'leaf.csr'), '-subj', '/CN=banger-test-token']);
    run([
      'openssl',
      'x509',
      '-req',
      '-in',
      join(d, 'leaf.csr'),
      '-CA',
      join(d, 'ca.pem'),
      '-CAkey',
      join(d, 'ca.key'),
      '-CAcreateserial',
      '-out',
      join(d, 'leaf.pem'),
      '-days',
      '2',
    ]);
    const leafPem = readFileSync(join(d, 'leaf.pem'), 'utf8');
    const leafDer = Buffer.from(leafPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
    const key = readFileSync(join(d, 'leaf.key'), 'utf8');
    const port = await freePort();
    this.tokenServer = createHttpServer((req, res) => {
      const url = new URL(req.url ?? '/', `http://127.0.0.1:${port}`);
      const scope = url.searchParams.get('scope');
      const authz = req.headers.authorization;
      let user: string | undefined;
      if (authz?.startsWith('Basic ')) {
        const [u, ...rest] = Buffer.from(authz.slice(6), 'base64').toString('utf8').split(':');
        if (this.users[u!] !== rest.join(':')) {
          this.tokenRequests.push({ authorized: false, scope });
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
          return;
        }
        user = u;
      }
      if (!user && !this.anonymousPull) {
        this.tokenRequests.push({ authorized: false, scope });
        res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="token"' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      this.tokenRequests.push({ authorized: !!user, scope });
      const access = [];
      const m = scope ? /^repository:([^:]+):(.+)$/.exec(scope) : null;
      if (m) access.push({ type: 'repository', name: m[1], actions: user ? m[2]!.split(',') : ['pull'] });
      const now = Math.floor(Date.now() / 1000);
      const header = { alg: 'RS256', typ: 'JWT', x5c: [leafDer.toString('base64')] };
      const claims = {
        iss: 'banger-test-issuer',
        sub: user ?? '',
        aud: 'banger-test-registry',
        exp: now + 600,
        nbf: now - 10,
        iat: now,
        jti: randomBytes(8).toString('hex'),
        access,
      };
      const signing = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
      const sig = createSign('RSA-SHA256').update(signing).sign(key);
      const token = `${signing}.${b64url(sig)}`;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 600 }));
    });
    await new Promise<void>((r) => this.tokenServer!.listen(port, '127.0.0.1', r));
    return port;
  }

  /**
   * Push an OCI layout (`oci:DIR:TAG`) as `repo:tag` with skopeo. Asynchronous on purpose:
   * the token server lives in this process and must keep answering while skopeo runs.
   */
  async push(ociDir: string, layoutTag: string, repoTag: string, opts: { all?: boolean } = {}): Promise<void> {
    const creds = this.mode === 'none' ? [] : ['--dest-creds', `${Object.keys(this.users)[0]}:${Object.values(this.users)[0]}`];
    const argv = [
      'skopeo',
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      ...(opts.all ? ['--all'] : []),
      ...creds,
      `oci:${ociDir}:${layoutTag}`,
      `docker://${this.host}/${repoTag}`,
    ];
    await new Promise<void>((resolve, reject) => {
      const full = this.wrap(argv);
      const p = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      p.stderr!.on('data', (d) => (err += d));
      p.on('error', reject);
      p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${argv.join(' ')} failed (${code}): ${err}`))));
    });
  }

  /** Path of a blob's data file in the registry's storage (to corrupt it in tests). */
  blobDataPath(digest: string): string {
    const hex = digest.replace(/^sha256:/, '');
    return join(this.storage, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
  }

  async stop(): Promise<void> {
    if (this.proc && this.proc.exitCode === null) {
      const p = this.proc;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
    if (this.tokenServer) await new Promise((r) => this.tokenServer!.close(r));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

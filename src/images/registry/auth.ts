import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import type { DB } from '../../core/db.js';
import { DOCKER_HUB } from '../reference.js';
import { SecretBox } from '../../core/secrets.js';

/** Username + secret for one registry. An identity token has username "<token>". */
export interface Credentials {
  username: string;
  password: string;
  source: string;
}

/** A parsed `WWW-Authenticate` challenge. */
export interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** Parse `Bearer realm="…",service="…",scope="…"` (quoted values may contain commas). */
export function parseChallenge(value: string | undefined): Challenge | undefined {
  if (!value) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(value);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2]!))) params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!;
  return { scheme, params };
}

/** Registry keys as written in docker config files: "https://index.docker.io/v1/" → "docker.io". */
export function normaliseRegistryKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, '');
  k = k.split('/')[0]!;
  if (k === 'index.docker.io' || k === 'registry-1.docker.io') k = DOCKER_HUB;
  return k.toLowerCase();
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

/**
 * Where credentials come from, first match wins:
 * 1. `banger registry login` (the registry_credentials table);
 * 2. the daemon user's docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json):
 *    `credHelpers[registry]`, then `auths[registry]`, then `credsStore`, the helpers run as
 *    `docker-credential-NAME get` with the server URL on stdin (argv, never a shell).
 */
export class CredentialStore {
  /** With `box`, passwords are stored sealed (core/secrets.ts); legacy plain rows still read. */
  constructor(
    private readonly db: DB,
    private readonly exec: Exec,
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly box?: SecretBox,
  ) {}

  dockerConfigPath(): string {
    return join(this.env.DOCKER_CONFIG ?? join(this.env.HOME ?? homedir(), '.docker'), 'config.json');
  }

  async get(registry: string): Promise<Credentials | undefined> {
    const key = normaliseRegistryKey(registry);
    const row = this.db.prepare('SELECT username, secret FROM registry_credentials WHERE registry = ?').get(key) as
      | { username: string; secret: string }
      | undefined;
    if (row) return { username: row.username, password: this.box ? this.box.open(row.secret) : row.secret, source: 'banger registry login' };
    const file = this.dockerConfigPath();
    let cfg: DockerConfig;
    try {
      cfg = JSON.parse(await readFile(file, 'utf8')) as DockerConfig;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new BangerError(ErrorCode.Invalid, `cannot read docker config ${file}: ${(e as Error).message}`, { hint: 'fix or remove the file', cause: e });
    }
    const helperFor = Object.entries(cfg.credHelpers ?? {}).find(([k]) => normaliseRegistryKey(k) === key)?.[1];
    if (helperFor) return this.fromHelper(helperFor, key, file);
    for (const [k, v] of Object.entries(cfg.auths ?? {})) {
      if (normaliseRegistryKey(k) !== key) continue;
      if (v.identitytoken) return { username: '<token>', password: v.identitytoken, source: file };
      if (v.username && v.password) return { username: v.username, password: v.password, source: file };
      if (v.auth) {
        const dec = Buffer.from(v.auth, 'base64').toString('utf8');
        const i = dec.indexOf(':');
        if (i < 0) throw new BangerError(ErrorCode.Invalid, `docker config ${file}: auths["${k}"].auth is not base64 of user:password`);
        return { username: dec.slice(0, i), password: dec.slice(i + 1), source: file };
      }
    }
    if (cfg.credsStore) return this.fromHelper(cfg.credsStore, key, file);
    return undefined;
  }

  private async fromHelper(helper: string, registry: string, file: string): Promise<Credentials | undefined> {
    if (!/^[a-zA-Z0-9_.-]+$/.test(helper)) throw new BangerError(ErrorCode.Invalid, `docker config ${file}: credential helper name '${helper}' is invalid`);
    const server = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
    const r = await this.exec([`docker-credential-${helper}`, 'get'], { input: server, allowFailure: true, timeoutMs: 30_000 });
    if (r.exitCode !== 0) {
      if (/credentials not found/i.test(r.stdout + r.stderr)) return undefined;
      throw new BangerError(
        ErrorCode.Auth,
        `docker-credential-${helper} get failed for ${registry} (exit ${r.exitCode}): ${r.stderr.trim() || r.stdout.trim()}`,
        { hint: `check the helper named in ${file}` },
      );
    }
    try {
      const j = JSON.parse(r.stdout) as { Username?: string; Secret?: string };
      if (!j.Secret) return undefined;
      return { username: j.Username ?? '', password: j.Secret, source: `docker-credential-${helper}` };
    } catch (e) {
      throw new BangerError(ErrorCode.Auth, `docker-credential-${helper} returned invalid JSON for ${registry}`, { cause: e });
    }
  }

  save(registry: string, username: string, secret: string): void {
    this.db
      .prepare(
        'INSERT INTO registry_credentials (registry, username, secret, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(registry) DO UPDATE SET username = excluded.username, secret = excluded.secret, updated_at = excluded.updated_at',
      )
      .run(normaliseRegistryKey(registry), username, this.box ? this.box.seal(secret) : secret, new Date().toISOString());
  }

  /** Seal every password still stored in plain text (an install from before sealing). Returns how many. */
  sealLegacy(): number {
    const box = this.box;
    if (!box) return 0;
    const rows = this.db.prepare('SELECT registry, secret FROM registry_credentials').all() as { registry: string; secret: string }[];
    const plain = rows.filter((r) => !SecretBox.isSealed(r.secret));
    if (plain.length) {
      const upd = this.db.prepare('UPDATE registry_credentials SET secret = ? WHERE registry = ?');
      this.db.transaction(() => {
        for (const r of plain) upd.run(box.seal(r.secret), r.registry);
      })();
    }
    return plain.length;
  }

  /** Returns true when something was removed. */
  remove(registry: string): boolean {
    return this.db.prepare('DELETE FROM registry_credentials WHERE registry = ?').run(normaliseRegistryKey(registry)).changes > 0;
  }
}

import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { BangerError, ErrorCode, throwIfAborted } from '../../core/errors.js';
import type { Exec } from '../../core/exec.js';
import { toolEnv } from '../../core/exec.js';
import type { Logger } from '../../core/log.js';
import { compareDebVersions, findPackageStanzas, parseDepends, parseRelease, satisfies, type ReleaseFile, type Stanza } from './deb822.js';
import { download, isNotFound, mirrorUrl } from './download.js';
import type { HttpClient } from '../../core/http.js';

/**
 * The verified half of the Debian chain of trust:
 *   dists/<suite>/InRelease  --gpgv (status VALIDSIG+GOODSIG, no BADSIG)-->  signed text
 *   signed text SHA256 list  -->  <component>/binary-<arch>/Packages(.xz|.gz|)  (size + sha256)
 *   Packages stanza          -->  Filename, Size, SHA256 of each .deb
 * Only the text gpgv itself outputs as signed is ever parsed. The signed Suite/Codename must be
 * the suite asked for, and a Valid-Until in the past is refused (replayed stale metadata).
 */

export interface ArchiveOptions {
  mirror: string;
  suite: string;
  component: string;
  /** Debian architecture name (amd64, arm64). */
  arch: string;
  keyring: string;
  tmpDir: string;
  exec: Exec;
  log: Logger;
  signal?: AbortSignal;
  http?: HttpClient;
  /** What is being waited for (progress). */
  onWait?: (message: string) => void;
}

/** A .deb as described by the verified Packages index. */
export interface DebRef {
  package: string;
  version: string;
  filename: string;
  size: number;
  sha256: string;
  url: string;
  stanza: Stanza;
}

/** Map a banger/uname arch to Debian's name. */
export function debianArch(arch: string): string {
  const map: Record<string, string> = { x86_64: 'amd64', amd64: 'amd64', aarch64: 'arm64', arm64: 'arm64' };
  const a = map[arch];
  if (!a) throw new BangerError(ErrorCode.Invalid, `unsupported architecture '${arch}' for a Debian kernel`, { hint: 'use x86_64 (amd64) or aarch64 (arm64)' });
  return a;
}

/**
 * Verify a clearsigned InRelease with gpgv and return the signed text gpgv extracted.
 * Requires at least one GOODSIG and VALIDSIG on the status fd and no BADSIG, regardless of exit code.
 */
export async function verifyInRelease(
  file: string,
  opts: { keyring: string; url: string; outFile: string; exec: Exec; signal?: AbortSignal },
): Promise<string> {
  const argv = ['gpgv', '--status-fd', '1', '--keyring', opts.keyring, '--output', opts.outFile, file];
  let r;
  try {
    r = await opts.exec(argv, { allowFailure: true, env: toolEnv(), signal: opts.signal });
  } catch (e) {
    await rm(opts.outFile, { force: true });
    throw e;
  }
  const status = r.stdout.split('\n');
  const has = (tag: string) => status.some((l) => l.startsWith(`[GNUPG:] ${tag} `) || l === `[GNUPG:] ${tag}`);
  const bad = has('BADSIG');
  if (bad || !has('GOODSIG') || !has('VALIDSIG')) {
    await rm(opts.outFile, { force: true });
    const why = bad ? 'a signature is BAD' : has('NO_PUBKEY') || has('ERRSIG') ? 'no signature made by a key in the keyring' : 'no valid signature';
    throw new BangerError(ErrorCode.Signature, `InRelease signature check failed for ${opts.url}: ${why}`, {
      hint: `the mirror served an InRelease that does not verify against ${opts.keyring}; do not trust this mirror, or fix config debianKeyring`,
      details: { url: opts.url, keyring: opts.keyring, gpgvExit: r.exitCode, stderr: r.stderr.trim().split('\n').slice(-3).join('\n') },
    });
  }
  try {
    return await readFile(opts.outFile, 'utf8');
  } finally {
    await rm(opts.outFile, { force: true });
  }
}

/** Fetches and verifies the suite's InRelease and Packages index; resolves packages from it. */
export class DebianArchive {
  private packagesIndex?: Buffer;
  release?: ReturnType<typeof parseRelease>;

  constructor(private readonly o: ArchiveOptions) {}

  get inReleaseUrl(): string {
    return mirrorUrl(this.o.mirror, `dists/${this.o.suite}/InRelease`);
  }

  /** Step "verify-inrelease": download, gpgv-verify, parse the signed text, check the suite name. */
  async loadRelease(): Promise<void> {
    const file = join(this.o.tmpDir, 'InRelease');
    try {
      await download(this.inReleaseUrl, file, { what: 'InRelease', signal: this.o.signal, http: this.o.http, onWait: this.o.onWait });
    } catch (e) {
      if (!isNotFound(e)) throw e;
      throw new BangerError(ErrorCode.NotFound, `suite '${this.o.suite}' not found: ${this.inReleaseUrl} does not exist`, {
        hint: `check the catalog entry's suite and the Debian mirror (config debianMirror / BANGER_DEBIAN_MIRROR, now ${this.o.mirror})`,
        cause: e,
        details: { url: this.inReleaseUrl },
      });
    }
    try {
      const text = await verifyInRelease(file, {
        keyring: this.o.keyring,
        url: this.inReleaseUrl,
        outFile: join(this.o.tmpDir, 'Release.signed'),
        exec: this.o.exec,
        signal: this.o.signal,
      });
      const rel = parseRelease(text);
      const { Suite: suite, Codename: codename } = rel.fields;
      if (suite !== this.o.suite && codename !== this.o.suite) {
        throw new BangerError(
          ErrorCode.Signature,
          `InRelease at ${this.inReleaseUrl} is signed for suite '${suite}' (codename '${codename}'), not '${this.o.suite}'`,
          {
            hint: 'the mirror is serving another suite under this path; use a correct mirror',
            details: { url: this.inReleaseUrl, suite, codename },
          },
        );
      }
      const validUntil = rel.fields['Valid-Until'];
      if (validUntil && Date.parse(validUntil) < Date.now()) {
        throw new BangerError(ErrorCode.Signature, `InRelease at ${this.inReleaseUrl} expired on ${validUntil} (Valid-Until)`, {
          hint: 'the mirror is serving stale metadata (possible replay); use an up-to-date mirror',
          details: { url: this.inReleaseUrl, validUntil },
        });
      }
      this.release = rel;
    } finally {
      await rm(file, { force: true });
    }
  }

  /** Step "fetch-packages": the first of Packages.xz, .gz, plain that the signed text lists and the mirror has. */
  async loadPackages(): Promise<Buffer> {
    if (this.packagesIndex !== undefined) return this.packagesIndex;
    if (!this.release) await this.loadRelease();
    const base = `${this.o.component}/binary-${this.o.arch}/Packages`;
    const candidates: { rel: ReleaseFile; ext: string }[] = [];
    for (const ext of ['.xz', '.gz', '']) {
      const rel = this.release!.sha256.get(base + ext);
      if (rel) candidates.push({ rel, ext });
    }
    if (candidates.length === 0) {
      throw new BangerError(ErrorCode.NotFound, `the signed InRelease at ${this.inReleaseUrl} lists no ${base}(.xz|.gz) with a SHA256`, {
        hint: `check the suite '${this.o.suite}', component '${this.o.component}' and architecture '${this.o.arch}'`,
        details: { url: this.inReleaseUrl },
      });
    }
    const tried: string[] = [];
    for (const { rel, ext } of candidates) {
      throwIfAborted(this.o.signal);
      const url = mirrorUrl(this.o.mirror, `dists/${this.o.suite}/${rel.path}`);
      const file = join(this.o.tmpDir, `Packages${ext}`);
      try {
        await download(url, file, {
          what: `Packages index ${rel.path}`,
          sha256: rel.sha256,
          size: rel.size,
          signal: this.o.signal,
          http: this.o.http,
          onWait: this.o.onWait,
        });
      } catch (e) {
        if (isNotFound(e)) {
          tried.push(url);
          continue;
        }
        throw e; // a digest mismatch is never "try the next one"
      }
      try {
        this.packagesIndex = await this.decompress(file, ext);
        this.o.log.debug('Packages index verified', { url, sha256: rel.sha256 });
        return this.packagesIndex;
      } finally {
        await rm(file, { force: true });
      }
    }
    throw new BangerError(ErrorCode.NotFound, `no Packages index found on the mirror: tried ${tried.join(', ')}`, {
      hint: 'check the Debian mirror URL (config debianMirror / BANGER_DEBIAN_MIRROR)',
      details: { tried },
    });
  }

  /** The index as bytes: decoding 50 MB to a JS string costs seconds; stanzas are decoded on demand. */
  private async decompress(file: string, ext: string): Promise<Buffer> {
    if (ext === '') return readFile(file);
    if (ext === '.gz') return gunzipSync(await readFile(file));
    const r = await this.o.exec(['xz', '-dc', file], { binary: true, signal: this.o.signal });
    return r.stdoutBuffer;
  }

  /**
   * The verified reference of package `name` (highest version satisfying `op version` when given).
   * Throws E_NOT_FOUND naming the package and the index URL.
   */
  async resolve(name: string, op?: string, version?: string): Promise<DebRef> {
    const text = await this.loadPackages();
    const candidates = findPackageStanzas(text, name)
      .filter((s) => s['Version'] && satisfies(s['Version'], op, version))
      .sort((a, b) => compareDebVersions(b['Version']!, a['Version']!));
    const s = candidates[0];
    if (!s) {
      throw new BangerError(
        ErrorCode.NotFound,
        `package ${name}${op ? ` (${op} ${version})` : ''} is not in ${this.o.suite}/${this.o.component}/binary-${this.o.arch} of ${this.o.mirror}`,
        {
          hint: 'check the catalog entry (package, suite, component) and the mirror',
          details: { package: name, suite: this.o.suite, mirror: this.o.mirror },
        },
      );
    }
    const filename = s['Filename'];
    const sha256 = s['SHA256'];
    const size = Number(s['Size']);
    if (!filename || !sha256 || !/^[0-9a-f]{64}$/i.test(sha256) || !Number.isSafeInteger(size) || filename.split('/').includes('..')) {
      throw new BangerError(ErrorCode.Invalid, `the Packages stanza of ${name} ${s['Version']} lacks a valid Filename, Size or SHA256`, {
        details: { package: name },
      });
    }
    return { package: name, version: s['Version']!, filename, size, sha256: sha256.toLowerCase(), url: mirrorUrl(this.o.mirror, filename), stanza: s };
  }

  /**
   * Resolve a kernel meta package (e.g. linux-image-cloud-amd64) to the real image package it
   * depends on (linux-image-<abi>-cloud-amd64). A package already named linux-image-<digit>… is used as is.
   */
  async resolveKernel(meta: string): Promise<DebRef> {
    if (/^linux-image-\d/.test(meta)) return this.resolve(meta);
    const m = await this.resolve(meta);
    for (const group of parseDepends(m.stanza['Depends'])) {
      for (const dep of group) {
        if (/^linux-image-\d/.test(dep.name)) return this.resolve(dep.name, dep.op, dep.version);
      }
    }
    throw new BangerError(
      ErrorCode.NotFound,
      `meta package ${meta} ${m.version} depends on no linux-image-<version>-… package (Depends: ${m.stanza['Depends'] ?? 'none'})`,
      {
        hint: "set the catalog entry's package to a linux-image meta package such as linux-image-cloud-amd64",
        details: { package: meta },
      },
    );
  }
}

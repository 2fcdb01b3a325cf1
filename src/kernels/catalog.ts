import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { defaultHttp, type HttpClient } from '../core/http.js';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { DebianKernelEntry } from './debian/fetch.js';

/**
 * Kernel catalogs: the one embedded in the package (`catalog.json` beside this file) and
 * remote ones (config `kernelCatalogs`, env `BANGER_KERNEL_CATALOGS`), merged over it by name.
 *
 * The embedded catalog holds only entries that can really be downloaded: today the Debian
 * archive kernel (kind "debian"). The generic built-in kernel bundle (kind "bundle") is added
 * here once the publishing script has uploaded it with its real URL and sha256.
 */

const SHA256 = /^[0-9a-f]{64}$/;

/** A `tar.zst` bundle: vmlinux at top level, optional initrd.img and modules/. */
export const BundleEntrySchema = z
  .object({
    name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/, 'must be 1-63 letters, digits, ".", "_" or "-"'),
    kind: z.literal('bundle').default('bundle'),
    distro: z.string().min(1),
    arch: z.string().min(1),
    kernelVersion: z.string().min(1),
    /** Absolute http(s) URL, or relative to the catalog's own URL (remote catalogs only). */
    tarballUrl: z.string().min(1),
    tarballSha256: z.string().regex(SHA256, 'must be 64 lowercase hex digits'),
    sizeBytes: z.number().int().nonnegative(),
    description: z.string().default(''),
  })
  .strict();

export const DebianEntrySchema = z
  .object({
    name: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$/, 'must be 1-63 letters, digits, ".", "_" or "-"'),
    kind: z.literal('debian'),
    distro: z.string().min(1),
    arch: z.string().min(1),
    package: z.string().regex(/^[a-z0-9][a-z0-9.+-]+$/, 'must be a Debian package name'),
    suite: z.string().min(1),
    component: z.string().optional(),
    description: z.string().default(''),
    sizeBytes: z.number().int().nonnegative().optional(),
    kernelVersion: z.string().optional(),
  })
  .strict();

const EntrySchema = z.union([DebianEntrySchema, BundleEntrySchema]);

export const CatalogSchema = z
  .object({
    version: z.literal(1),
    entries: z.array(z.unknown()),
  })
  .strict();

export type BundleEntry = z.infer<typeof BundleEntrySchema>;
export type CatalogEntry = (BundleEntry | DebianKernelEntry) & { /** "embedded" or the catalog URL. */ catalog: string };

/**
 * Parse one catalog document. Errors name the catalog (`origin`), the entry (index and name)
 * and the field. Relative `tarballUrl`s resolve against `origin` when it is a URL.
 */
export function parseCatalog(doc: unknown, origin: string): CatalogEntry[] {
  const top = CatalogSchema.safeParse(doc);
  if (!top.success) throw catalogError(origin, top.error.issues[0]!.path.join('.') || '(root)', top.error.issues[0]!.message);
  const seen = new Set<string>();
  return top.data.entries.map((raw, i) => {
    const kind = raw && typeof raw === 'object' && 'kind' in raw ? (raw as { kind: unknown }).kind : 'bundle';
    const label = `entries[${i}]${raw && typeof raw === 'object' && typeof (raw as { name?: unknown }).name === 'string' ? ` (${(raw as { name: string }).name})` : ''}`;
    const schema = kind === 'debian' ? DebianEntrySchema : kind === 'bundle' ? BundleEntrySchema : undefined;
    if (!schema) throw catalogError(origin, `${label}.kind`, `unknown kind ${JSON.stringify(kind)} (expected "bundle" or "debian")`);
    const r = (schema as z.ZodType<z.infer<typeof EntrySchema>>).safeParse(raw);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      throw catalogError(origin, `${label}.${issue.path.join('.') || '(entry)'}`, issue.message);
    }
    const entry = r.data;
    if (seen.has(entry.name)) throw catalogError(origin, `${label}.name`, `duplicate name '${entry.name}'`);
    seen.add(entry.name);
    if (entry.kind === 'bundle') entry.tarballUrl = resolveTarballUrl(entry.tarballUrl, origin, `${label}.tarballUrl`);
    return { ...entry, catalog: origin } as CatalogEntry;
  });
}

function resolveTarballUrl(url: string, origin: string, field: string): string {
  let u: URL;
  try {
    u = /^[a-z][a-z0-9+.-]*:/i.test(url) || !/^https?:/.test(origin) ? new URL(url) : new URL(url, origin);
  } catch {
    throw catalogError(origin, field, `invalid URL '${url}'`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw catalogError(origin, field, `unsupported URL scheme '${u.protocol}' (http and https only)`);
  return u.toString();
}

function catalogError(origin: string, field: string, message: string): BangerError {
  return new BangerError(ErrorCode.Invalid, `kernel catalog ${origin}: field '${field}': ${message}`, {
    hint: origin === 'embedded' ? 'this is a bug in the banger package' : 'fix the catalog or remove it from kernelCatalogs / BANGER_KERNEL_CATALOGS',
    details: { catalog: origin, field },
  });
}

let embeddedCache: CatalogEntry[] | undefined;

/** The catalog shipped in the package (parsed once). */
export function embeddedCatalog(): CatalogEntry[] {
  if (!embeddedCache) {
    const text = readFileSync(new URL('./catalog.json', import.meta.url), 'utf8');
    embeddedCache = parseCatalog(JSON.parse(text), 'embedded');
  }
  return embeddedCache;
}

/** Fetch and parse one remote catalog (http/https) through the HTTP client (deadline, 4 MiB cap). */
export async function fetchCatalog(url: string, opts: { signal?: AbortSignal; http?: HttpClient } = {}): Promise<CatalogEntry[]> {
  const max = 4 * 1024 * 1024;
  let body: string;
  if (url.startsWith('file:')) {
    // A local catalog (e.g. one you publish from this machine); its tarballUrls must be absolute http(s).
    try {
      body = await readFile(new URL(url), 'utf8');
    } catch (e) {
      throw new BangerError(ErrorCode.NotFound, `kernel catalog ${url}: ${errorMessage(e)}`, {
        hint: 'check the path in kernelCatalogs / BANGER_KERNEL_CATALOGS',
        cause: e,
        details: { catalog: url },
      });
    }
    return parseCatalog(parseJson(body, url), url);
  }
  const http = opts.http ?? defaultHttp();
  const what = `kernel catalog ${url}`;
  try {
    const res = await http.open(url, { what, signal: opts.signal, headers: { accept: 'application/json' }, maxBytes: max, deadline: 'document' });
    if (res.status < 200 || res.status >= 300) {
      res.close();
      throw new BangerError(ErrorCode.Http, `kernel catalog ${url}: HTTP ${res.status}`, {
        hint: 'check the URL in kernelCatalogs / BANGER_KERNEL_CATALOGS',
        details: { catalog: url, status: res.status },
      });
    }
    body = (await res.readAll()).toString('utf8');
  } catch (e) {
    if (e instanceof BangerError) {
      if (e.code === ErrorCode.Cancelled || e.details?.['catalog']) throw e;
      throw new BangerError(e.code, e.message, {
        hint: 'check the URL and your network, or remove it from kernelCatalogs / BANGER_KERNEL_CATALOGS',
        cause: e,
        details: { ...e.details, catalog: url },
      });
    }
    throw new BangerError(ErrorCode.Http, `${what}: ${errorMessage(e)}`, {
      hint: 'check the URL and your network, or remove it from kernelCatalogs / BANGER_KERNEL_CATALOGS',
      cause: e,
      details: { catalog: url },
    });
  }
  return parseCatalog(parseJson(body, url), url);
}

function parseJson(body: string, url: string): unknown {
  try {
    return JSON.parse(body);
  } catch (e) {
    throw new BangerError(ErrorCode.Invalid, `kernel catalog ${url}: not valid JSON: ${errorMessage(e)}`, {
      hint: 'fix the catalog or remove it from kernelCatalogs / BANGER_KERNEL_CATALOGS',
      details: { catalog: url },
    });
  }
}

/** Merge catalogs in order: a later entry replaces an earlier one of the same name. Sorted by name. */
export function mergeCatalogs(...lists: CatalogEntry[][]): CatalogEntry[] {
  const byName = new Map<string, CatalogEntry>();
  for (const list of lists) for (const e of list) byName.set(e.name, e);
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Embedded catalog with every remote one (in the configured order) merged over it. */
export async function loadCatalog(urls: string[], opts: { signal?: AbortSignal; http?: HttpClient } = {}): Promise<CatalogEntry[]> {
  const r = await loadCatalogReport(urls, opts);
  if (r.failures[0]) throw r.failures[0].error;
  return r.entries;
}

export interface CatalogFailure {
  catalog: string;
  error: BangerError;
}

/**
 * Like loadCatalog, but a remote catalog that cannot be read (unreachable, HTTP error, invalid)
 * is reported instead of failing the whole list: the embedded entries and every readable
 * catalog still come back. Cancellation still throws.
 */
export async function loadCatalogReport(
  urls: string[],
  opts: { signal?: AbortSignal; http?: HttpClient } = {},
): Promise<{ entries: CatalogEntry[]; failures: CatalogFailure[] }> {
  const settled = await Promise.allSettled(urls.map((u) => fetchCatalog(u, opts)));
  const lists: CatalogEntry[][] = [];
  const failures: CatalogFailure[] = [];
  settled.forEach((r, i) => {
    if (r.status === 'fulfilled') return void lists.push(r.value);
    const error =
      r.reason instanceof BangerError ? r.reason : new BangerError(ErrorCode.Http, `kernel catalog ${urls[i]}: ${errorMessage(r.reason)}`, { cause: r.reason });
    if (error.code === ErrorCode.Cancelled) throw error;
    failures.push({ catalog: urls[i]!, error });
  });
  return { entries: mergeCatalogs(embeddedCatalog(), ...lists), failures };
}

/** Size shown for an entry (bundles: tarball size; Debian: the approximate size). */
export function entrySize(e: CatalogEntry): number | undefined {
  return e.kind === 'debian' ? e.sizeBytes : (e as BundleEntry).sizeBytes;
}

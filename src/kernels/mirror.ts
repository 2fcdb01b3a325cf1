import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * Which Debian archive mirror to fetch kernels from: `config.debianMirror` when set, else the
 * first `deb` source for a Debian suite in the host's apt configuration
 * (/etc/apt/sources.list, then /etc/apt/sources.list.d/*.list and *.sources in name order).
 * Security suites (`*-security`) and non-Debian suites are skipped.
 */

/** Debian codenames and aliases whose archive carries the kernel meta packages. */
const DEBIAN_SUITES = new Set([
  'buster',
  'bullseye',
  'bookworm',
  'trixie',
  'forky',
  'duke',
  'sid',
  'stable',
  'testing',
  'unstable',
  'oldstable',
  'oldoldstable',
]);

/** True for "bookworm", "bookworm-updates", "stable-backports"; false for "*-security" and others. */
export function isDebianSuite(suite: string): boolean {
  const [base, ...rest] = suite.split('-');
  if (!base || !DEBIAN_SUITES.has(base)) return false;
  return !rest.includes('security');
}

function cleanUri(uri: string): string | undefined {
  if (!/^https?:\/\//.test(uri)) return undefined;
  if (/security/i.test(uri)) return undefined;
  return uri.replace(/\/+$/, '');
}

/** One-line format: `deb [opts] URI SUITE COMPONENTS…`; comments and deb-src ignored. */
export function mirrorFromList(text: string): string | undefined {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line.startsWith('deb ') && !line.startsWith('deb\t')) continue;
    const rest = line
      .slice(3)
      .trim()
      .replace(/^\[[^\]]*\]\s*/, '');
    const [uri, suite] = rest.split(/\s+/);
    if (!uri || !suite || !isDebianSuite(suite)) continue;
    const u = cleanUri(uri);
    if (u) return u;
  }
  return undefined;
}

/** deb822 format (`*.sources`): stanzas of `Field: value`, separated by blank lines. */
export function mirrorFromSources(text: string): string | undefined {
  const stanzas = text.split(/\n\s*\n/);
  for (const stanza of stanzas) {
    const fields = new Map<string, string>();
    let last: string | undefined;
    for (const raw of stanza.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last)} ${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(raw);
      if (m) {
        last = m[1]!.toLowerCase();
        fields.set(last, m[2]!.trim());
      }
    }
    if (/^(no|false|0)$/i.test(fields.get('enabled') ?? 'yes')) continue;
    const types = (fields.get('types') ?? '').split(/\s+/);
    if (!types.includes('deb')) continue;
    const suites = (fields.get('suites') ?? '').split(/\s+/).filter(Boolean);
    if (!suites.some(isDebianSuite)) continue;
    for (const uri of (fields.get('uris') ?? '').split(/\s+/).filter(Boolean)) {
      const u = cleanUri(uri);
      if (u) return u;
    }
  }
  return undefined;
}

/** Pure resolver over already-read files, in the order apt reads them. */
export function mirrorFromAptFiles(files: { path: string; content: string }[]): string | undefined {
  for (const f of files) {
    const m = f.path.endsWith('.sources') ? mirrorFromSources(f.content) : f.path.endsWith('.list') ? mirrorFromList(f.content) : undefined;
    if (m) return m;
  }
  return undefined;
}

/** Read the host's apt sources under `etcApt` (default /etc/apt). Missing files are skipped. */
export async function readAptSources(etcApt = '/etc/apt'): Promise<{ path: string; content: string }[]> {
  const out: { path: string; content: string }[] = [];
  const main = join(etcApt, 'sources.list');
  const text = await readFile(main, 'utf8').catch(() => undefined);
  if (text !== undefined) out.push({ path: main, content: text });
  const dir = join(etcApt, 'sources.list.d');
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.list') || n.endsWith('.sources')).sort();
  for (const n of names) {
    const content = await readFile(join(dir, n), 'utf8').catch(() => undefined);
    if (content !== undefined) out.push({ path: join(dir, n), content });
  }
  return out;
}

/** The mirror to use: configured one, else the host's apt sources; E_INVALID with a hint when none. */
export async function resolveDebianMirror(configured: string | undefined, etcApt = '/etc/apt'): Promise<string> {
  if (configured) return configured.replace(/\/+$/, '');
  const m = mirrorFromAptFiles(await readAptSources(etcApt));
  if (m) return m;
  throw new BangerError(ErrorCode.Invalid, `no Debian mirror configured and none found in ${etcApt}/sources.list or ${etcApt}/sources.list.d/`, {
    hint: 'set "debianMirror" in the config file or BANGER_DEBIAN_MIRROR, e.g. http://deb.debian.org/debian',
  });
}

/**
 * Minimal, pure parsers for Debian archive metadata (deb822 control format): Release/InRelease
 * hash lists, Packages stanzas, Depends fields, and dpkg version ordering.
 * No I/O here, so everything is unit-tested directly.
 */

export type Stanza = Record<string, string>;

/** Parse one deb822 stanza (fields `Name: value`, continuation lines start with a space/tab). */
export function parseStanza(text: string): Stanza {
  const out: Stanza = {};
  let key: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && key) {
      out[key] += '\n' + line.slice(1);
      continue;
    }
    const i = line.indexOf(':');
    if (i <= 0) continue;
    key = line.slice(0, i);
    out[key] = line.slice(i + 1).trim();
  }
  return out;
}

export interface ReleaseFile {
  path: string;
  size: number;
  sha256: string;
}

/** The header fields and the SHA256 file list of a (signed, already verified) Release text. */
export function parseRelease(signedText: string): { fields: Stanza; sha256: Map<string, ReleaseFile> } {
  const fields = parseStanza(signedText.split(/\n\s*\n/)[0] ?? '');
  const sha256 = new Map<string, ReleaseFile>();
  for (const line of (fields['SHA256'] ?? '').split('\n')) {
    const m = /^\s*([0-9a-fA-F]{64})\s+(\d+)\s+(\S+)\s*$/.exec(line);
    if (m) sha256.set(m[3]!, { sha256: m[1]!.toLowerCase(), size: Number(m[2]), path: m[3]! });
  }
  return { fields, sha256 };
}

/**
 * Every stanza of `Packages` whose `Package:` is exactly `name`. Fast on a 50 MB index: a Buffer
 * is searched with memchr-speed `indexOf` and only the matching stanzas are decoded.
 */
export function findPackageStanzas(packages: Buffer | string, name: string): Stanza[] {
  const out: Stanza[] = [];
  const needle = `Package: ${name}\n`;
  const buf = Buffer.isBuffer(packages) ? packages : undefined;
  const str = typeof packages === 'string' ? packages : undefined;
  const at = (i: number) => (buf ? buf[i] === 0x0a : str![i] === '\n');
  const find = (s: string, from: number) => (buf ? buf.indexOf(s, from) : str!.indexOf(s, from));
  const length = buf ? buf.length : str!.length;
  let from = 0;
  for (;;) {
    const i = find(needle, from);
    if (i < 0) break;
    from = i + needle.length;
    if (i !== 0 && !at(i - 1)) continue; // a continuation line or another field
    let end = find('\n\n', i);
    if (end < 0) end = length;
    out.push(parseStanza(buf ? buf.toString('utf8', i, end) : str!.slice(i, end)));
  }
  return out;
}

export interface Dependency {
  name: string;
  op?: string;
  version?: string;
}

/** Parse a Depends field into groups of alternatives: `a (>= 1) | b, c` → [[a,b],[c]]. */
export function parseDepends(field: string | undefined): Dependency[][] {
  if (!field) return [];
  return field
    .split(',')
    .map((group) =>
      group
        .split('|')
        .map((alt) => alt.trim())
        .filter(Boolean)
        .map((alt) => {
          const m = /^([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?/.exec(alt);
          return m ? { name: m[1]!, op: m[2], version: m[3] } : { name: alt };
        }),
    )
    .filter((g) => g.length > 0);
}

function order(c: string): number {
  if (c === '~') return -1;
  if (/\d/.test(c)) return 0;
  if (c === '') return 0;
  if (/[a-zA-Z]/.test(c)) return c.charCodeAt(0);
  return c.charCodeAt(0) + 256;
}

function verrevcmp(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDiff = 0;
    while ((i < a.length && !/\d/.test(a[i]!)) || (j < b.length && !/\d/.test(b[j]!))) {
      const ac = i < a.length && !/\d/.test(a[i]!) ? order(a[i]!) : 0;
      const bc = j < b.length && !/\d/.test(b[j]!) ? order(b[j]!) : 0;
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (i < a.length && /\d/.test(a[i]!) && j < b.length && /\d/.test(b[j]!)) {
      if (!firstDiff) firstDiff = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && /\d/.test(a[i]!)) return 1;
    if (j < b.length && /\d/.test(b[j]!)) return -1;
    if (firstDiff) return firstDiff;
  }
  return 0;
}

/** dpkg's version ordering (epoch:upstream-revision). Negative if a < b, 0 if equal, positive if a > b. */
export function compareDebVersions(a: string, b: string): number {
  const split = (v: string) => {
    const c = v.indexOf(':');
    const epoch = c >= 0 ? Number(v.slice(0, c)) : 0;
    const rest = c >= 0 ? v.slice(c + 1) : v;
    const d = rest.lastIndexOf('-');
    return { epoch, upstream: d >= 0 ? rest.slice(0, d) : rest, revision: d >= 0 ? rest.slice(d + 1) : '' };
  };
  const x = split(a);
  const y = split(b);
  if (x.epoch !== y.epoch) return x.epoch - y.epoch;
  return verrevcmp(x.upstream, y.upstream) || verrevcmp(x.revision, y.revision);
}

/** True when `version` satisfies `op ref` (Debian relation operators). */
export function satisfies(version: string, op: string | undefined, ref: string | undefined): boolean {
  if (!op || ref === undefined) return true;
  const c = compareDebVersions(version, ref);
  switch (op) {
    case '=':
      return c === 0;
    case '>=':
      return c >= 0;
    case '<=':
      return c <= 0;
    case '>>':
      return c > 0;
    case '<<':
      return c < 0;
    default:
      return false;
  }
}

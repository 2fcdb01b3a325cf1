import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

/**
 * The table-ownership check: reads `<!-- table-owners -->` from docs/architecture.md (one table
 * a line: `TABLE FILE...`, the repository files that may run SQL on it) and reports every SQL
 * statement in `src/**` (FROM, JOIN, INTO, UPDATE, DELETE FROM; upper case, as banger writes
 * SQL) that names a table outside its owners. Migrations (the schema) are exempt.
 */
export interface TableUse {
  file: string;
  line: number;
  table: string;
}

export function parseTableOwners(markdown: string): Map<string, string[]> {
  const m = /<!-- table-owners -->([\s\S]*?)<!-- \/table-owners -->/.exec(markdown);
  if (!m) throw new Error('docs/architecture.md: no <!-- table-owners --> block');
  const owners = new Map<string, string[]>();
  for (const raw of m[1]!.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line || line.startsWith('```')) continue;
    const [table, ...files] = line.split(/\s+/);
    if (!table || files.length === 0) throw new Error(`table owners line without files: ${raw}`);
    owners.set(table, files);
  }
  return owners;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** SQL uses of known tables outside their owners. */
export function foreignTableUses(root: string, owners: Map<string, string[]>): TableUse[] {
  const out: TableUse[] = [];
  const sql = /\b(?:FROM|JOIN|INTO|UPDATE)\s+([a-z_]+)\b/g;
  for (const abs of tsFiles(join(root, 'src'))) {
    const file = relative(root, abs);
    if (file === 'src/core/migrations.ts') continue;
    readFileSync(abs, 'utf8')
      .split('\n')
      .forEach((text, i) => {
        for (const m of text.matchAll(sql)) {
          const table = m[1]!;
          const allowed = owners.get(table);
          if (allowed && !allowed.includes(file)) out.push({ file, line: i + 1, table });
        }
      });
  }
  return out;
}

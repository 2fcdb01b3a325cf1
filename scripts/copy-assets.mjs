// Copies non-TypeScript assets (catalog.json, guest files) next to the compiled code.
import { cpSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const exts = ['.json', '.sh', '.service', '.c', '.conf'];
function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (exts.some((e) => name.endsWith(e)) || p.includes('/guest/files/')) {
      const out = join('dist', relative('.', p));
      mkdirSync(dirname(out), { recursive: true });
      cpSync(p, out);
    }
  }
}
if (existsSync('src')) walk('src');

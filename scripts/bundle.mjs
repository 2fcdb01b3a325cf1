// Bundles the CLI and the daemon, each into one module: dist/cli.mjs (bin/banger) and
// dist/bangerd.mjs (bin/bangerd), with their npm dependencies inside. Node then resolves, reads
// and links one module instead of dozens (about 55 ms less per CLI call on our CI machines, see
// bench/vm-create.ts), and the .deb (scripts/package-deb.sh) needs no node_modules.
//
// Assets (catalog.json, the guest files, the initramfs init, the agent binary) stay where the
// build puts them, next to the compiled modules under dist/src/. Code finds them relative to its
// own module (`new URL('./x', import.meta.url)`); in a bundle every module shares one
// import.meta, so this build rewrites each module's import.meta.url / dirname / filename /
// resolve() to the URL its compiled file has under dist/, computed from the bundle's location at
// run time. A bundle therefore works wherever dist/ is copied as a whole (the .deb does).
import { build } from 'esbuild';
import { readFile, readdir, rm } from 'node:fs/promises';
import { dirname, relative, resolve } from 'node:path';

const dist = resolve('dist');

const moduleRelativeImportMeta = {
  name: 'module-relative-import-meta',
  setup(b) {
    b.onLoad({ filter: /[\\/]dist[\\/]src[\\/].*\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta')) return undefined;
      const rel = JSON.stringify(relative(dist, args.path).split('\\').join('/'));
      const contents = text
        .replace(/\bimport\.meta\.resolve\(/g, `__bangerResolve(${rel}, `)
        .replace(/\bimport\.meta\.url\b/g, `__bangerUrl(${rel})`)
        .replace(/\bimport\.meta\.dirname\b/g, `__bangerDirname(${rel})`)
        .replace(/\bimport\.meta\.filename\b/g, `__bangerFilename(${rel})`);
      if (/\bimport\.meta\b/.test(contents)) throw new Error(`${args.path}: import.meta use that the bundle cannot map (only url, dirname, filename, resolve)`);
      return { contents, loader: 'js', resolveDir: dirname(args.path) };
    });
  },
};

// The bundle lives at dist/NAME.mjs: a module's compiled URL is dist/ + its path under dist/.
const banner = [
  "import { createRequire as __bangerCreateRequire } from 'node:module';",
  "import { fileURLToPath as __bangerToPath } from 'node:url';",
  // commander is CommonJS: give its require() calls of node builtins a real require.
  'const require = __bangerCreateRequire(import.meta.url);',
  'const __bangerUrl = (rel) => new URL(rel, import.meta.url).href;',
  'const __bangerFilename = (rel) => __bangerToPath(__bangerUrl(rel));',
  "const __bangerDirname = (rel) => __bangerToPath(new URL('.', __bangerUrl(rel)));",
  'const __bangerResolve = (rel, spec) => new URL(spec, __bangerUrl(rel)).href;',
].join('\n');

// Chunks of an earlier build go first (their names carry content hashes).
for (const f of await readdir(dist).catch(() => [])) if (/^cli-.*\.mjs$/.test(f)) await rm(resolve(dist, f));

// The CLI is split (esbuild's code splitting): dist/cli.mjs holds main and commander, and each
// command group main.ts imports when used is a chunk beside it (dist/cli-*.mjs), so a command
// parses and evaluates only what it needs (bench/cli-start.ts). Chunks sit in dist/ itself, as
// the import.meta mapping above needs. The daemon stays one module.
for (const [entry, name, splitting] of [
  ['dist/src/cli/main.js', 'cli', true],
  ['dist/src/daemon/main.js', 'bangerd', false],
]) {
  await build({
    entryPoints: { [name]: entry },
    outdir: dist,
    outExtension: { '.js': '.mjs' },
    splitting,
    chunkNames: 'cli-[name]-[hash]',
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22',
    banner: { js: banner },
    plugins: [moduleRelativeImportMeta],
    logLevel: 'warning',
  });
}

// Bundles the CLI (dist/src/cli/main.js and everything it imports, commander included) into
// one file, dist/cli.mjs, which bin/banger loads. Node then resolves, reads and links one
// module instead of dozens: about 55 ms less per CLI call on our CI machines (see
// bench/vm-create.ts). The daemon is not bundled (native modules, assets next to its code).
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/src/cli/main.js'],
  outfile: 'dist/cli.mjs',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // commander is CommonJS: give its require() calls of node builtins a real require.
  banner: { js: "import { createRequire as __bangerCreateRequire } from 'node:module';\nconst require = __bangerCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

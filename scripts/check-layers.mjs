#!/usr/bin/env node
// The layer and cycle check outside the test runner: node scripts/check-layers.mjs (after npm run build).
// Prints one line per problem and exits 1 when there is any; the map is in docs/architecture.md.
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { checkLayers, formatReport } = await import(join(root, 'dist/test/helpers/import-graph.js'));
const report = checkLayers(root);
const text = formatReport(report);
console.log(text || `layers ok: ${report.edges.length} imports, no upward import, no cycle`);
process.exit(text ? 1 : 0);

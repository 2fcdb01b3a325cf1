import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkLayers, findCycles, formatReport, parseLayerMap } from '../helpers/import-graph.js';
import { foreignTableUses, parseTableOwners } from '../helpers/table-owners.js';

// The repository root (tests run from dist/test/unit).
const root = join(import.meta.dirname, '..', '..', '..');

test('src imports follow the layer map in docs/architecture.md: no upward import, no cycle, no unmapped file', () => {
  const r = checkLayers(root);
  assert.ok(r.edges.length > 100, `the graph has ${r.edges.length} imports: the scanner found too few`);
  assert.equal(formatReport(r), '');
});

test('the check reports an upward import, a cycle and an unmapped file, naming the edge', () => {
  const layers = parseLayerMap(readFileSync(join(root, 'docs/architecture.md'), 'utf8'));
  // A map where kernels may import nothing: every real kernels → core edge becomes a violation.
  const strict = layers.map((l) => (l.name === 'kernels' ? { ...l, mayImport: new Set<string>() } : l));
  const r = checkLayers(root, strict);
  const v = r.violations.find((x) => x.from === 'src/kernels/service.ts' && x.to === 'src/core/errors.ts');
  assert.ok(v, 'kernels/service.ts → core/errors.ts reported');
  assert.match(formatReport(r), /layer violation: src\/kernels\/service\.ts \(kernels\) imports src\/core\/errors\.ts \(core\); kernels may not import core/);
  // Cycles: a three-file ring and a self-import are found, a chain is not.
  const ring = findCycles([
    { from: 'a', to: 'b' },
    { from: 'b', to: 'c' },
    { from: 'c', to: 'a' },
    { from: 'c', to: 'd' },
  ]);
  assert.deepEqual(ring, [['a', 'b', 'c', 'a']]);
  assert.deepEqual(findCycles([{ from: 'x', to: 'x' }]), [['x', 'x']]);
  assert.deepEqual(
    findCycles([
      { from: 'a', to: 'b' },
      { from: 'b', to: 'c' },
    ]),
    [],
  );
  // A map without the guest layer leaves src/guest files unmapped.
  const noGuest = checkLayers(
    root,
    layers.filter((l) => l.name !== 'guest').map((l) => ({ ...l, mayImport: new Set([...l.mayImport].filter((n) => n !== 'guest')) })),
  );
  assert.ok(noGuest.unmapped.includes('src/guest/inject.ts'));
});

test('the layer map rejects a line without an arrow and an unknown layer name', () => {
  assert.throws(() => parseLayerMap('<!-- layer-map -->\ncore src/core/\n<!-- /layer-map -->'), /without '->'/);
  assert.throws(() => parseLayerMap('<!-- layer-map -->\ncore src/core/ -> nope\n<!-- /layer-map -->'), /unknown layer 'nope'/);
  assert.throws(() => parseLayerMap('no map here'), /no <!-- layer-map --> block/);
});

test('each table is read and written only by its owner (docs/architecture.md, table owners)', () => {
  const owners = parseTableOwners(readFileSync(join(root, 'docs/architecture.md'), 'utf8'));
  const uses = foreignTableUses(root, owners);
  assert.deepEqual(
    uses.map((u) => `${u.file}:${u.line} uses table ${u.table} (owners: ${owners.get(u.table)!.join(', ')})`),
    [],
  );
  // The check sees real SQL: with an owner list that leaves kernels/record.ts out, its queries are reported.
  const moved = new Map(owners).set('kernels', ['src/nowhere.ts']);
  assert.ok(foreignTableUses(root, moved).some((u) => u.file === 'src/kernels/record.ts' && u.table === 'kernels'));
});

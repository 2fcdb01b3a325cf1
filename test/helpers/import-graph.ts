import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/**
 * The layer check: reads the layer map from `docs/architecture.md` (the block between
 * `<!-- layer-map -->` and `<!-- /layer-map -->`, one layer a line:
 * `NAME PATH... -> MAY-IMPORT...`), builds the import graph of `src/**` with the TypeScript
 * compiler's own import scanner (static, type-only, re-exports and dynamic `import()`), and
 * reports every edge from one layer to a layer it may not import, and every import cycle
 * between files. A file belongs to the layer whose path prefix is the longest match. Imports
 * inside one layer are free (cycles aside). Used by test/unit/imports.test.ts and
 * scripts/check-layers.mjs.
 */

export interface Layer {
  name: string;
  /** Path prefixes relative to the repository root ("src/vms/", "src/vms/rpc.ts"). */
  paths: string[];
  mayImport: Set<string>;
}

/** One import: `from` and `to` are repository-relative paths of .ts files. */
export interface Edge {
  from: string;
  to: string;
}

export interface LayerReport {
  /** Edges that point to a layer the importer may not use (including upward ones). */
  violations: Array<Edge & { fromLayer: string; toLayer: string }>;
  /** One real import loop per cycle (strongly connected component), first file repeated at the end. */
  cycles: string[][];
  /** Files under src/ that no layer claims. */
  unmapped: string[];
  edges: Edge[];
}

/** Parses the map out of the architecture document's text. Throws on a malformed line. */
export function parseLayerMap(markdown: string): Layer[] {
  const m = /<!-- layer-map -->([\s\S]*?)<!-- \/layer-map -->/.exec(markdown);
  if (!m) throw new Error('docs/architecture.md: no <!-- layer-map --> block');
  const layers: Layer[] = [];
  for (const raw of m[1]!.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line || line.startsWith('```')) continue;
    const [left, right] = line.split('->');
    if (right === undefined) throw new Error(`layer map line without '->': ${raw}`);
    const [name, ...paths] = left!.trim().split(/\s+/);
    if (!name || paths.length === 0) throw new Error(`layer map line without a name and paths: ${raw}`);
    layers.push({
      name,
      paths,
      mayImport: new Set(
        right
          .trim()
          .split(/\s+/)
          .filter((w) => w && w !== '(nothing)'),
      ),
    });
  }
  const names = new Set(layers.map((l) => l.name));
  for (const l of layers) for (const t of l.mayImport) if (!names.has(t)) throw new Error(`layer ${l.name} may import unknown layer '${t}'`);
  return layers;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') && !p.endsWith('.d.ts') ? [p] : [];
  });
}

/** Every relative import between files under `root/src`, as repository-relative paths. */
export function importEdges(root: string): Edge[] {
  const edges: Edge[] = [];
  for (const file of tsFiles(join(root, 'src'))) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    for (const imp of info.importedFiles) {
      if (!imp.fileName.startsWith('.')) continue;
      const target = resolve(dirname(file), imp.fileName).replace(/\.js$/, '.ts');
      edges.push({ from: relative(root, file), to: relative(root, target) });
    }
  }
  return edges;
}

/** The layer owning `path` (longest prefix), or undefined. */
export function layerOf(layers: Layer[], path: string): Layer | undefined {
  let best: Layer | undefined;
  let len = -1;
  for (const l of layers) for (const p of l.paths) if (path.startsWith(p) && p.length > len) [best, len] = [l, p.length];
  return best;
}

/** Strongly connected components with more than one file (or a self-import), as cycles. */
export function findCycles(edges: Edge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  let i = 0;
  const visit = (v: string): void => {
    index.set(v, i);
    low.set(v, i++);
    stack.push(v);
    on.add(v);
    for (const w of next.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (next.get(v) ?? []).includes(v)) out.push(shortestLoop(v, new Set(scc), next));
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

/** The shortest real path `start -> ... -> start` inside one strongly connected component. */
function shortestLoop(start: string, inScc: Set<string>, next: Map<string, string[]>): string[] {
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const w of next.get(v) ?? []) {
      if (!inScc.has(w)) continue;
      if (w === start) {
        const path: string[] = [];
        for (let u = v; u !== start; u = prev.get(u)!) path.unshift(u);
        return [start, ...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

/** Runs the whole check over the repository at `root`. */
export function checkLayers(root: string, layers = parseLayerMap(readFileSync(join(root, 'docs/architecture.md'), 'utf8'))): LayerReport {
  const edges = importEdges(root);
  const violations: LayerReport['violations'] = [];
  const unmapped = new Set<string>();
  for (const e of edges) {
    const a = layerOf(layers, e.from);
    const b = layerOf(layers, e.to);
    if (!a) unmapped.add(e.from);
    if (!b) unmapped.add(e.to);
    if (a && b && a !== b && !a.mayImport.has(b.name)) violations.push({ ...e, fromLayer: a.name, toLayer: b.name });
  }
  return { violations, cycles: findCycles(edges), unmapped: [...unmapped].sort(), edges };
}

/** Human-readable lines, one per problem ("" when there is none). */
export function formatReport(r: Pick<LayerReport, 'violations' | 'cycles' | 'unmapped'>): string {
  return [
    ...r.violations.map((v) => `layer violation: ${v.from} (${v.fromLayer}) imports ${v.to} (${v.toLayer}); ${v.fromLayer} may not import ${v.toLayer}`),
    ...r.cycles.map((c) => `import cycle: ${c.join(' -> ')}`),
    ...r.unmapped.map((f) => `not in the layer map: ${f}`),
  ].join('\n');
}

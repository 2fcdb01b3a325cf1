import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import ts from 'typescript';
import { BangerError as CoreBangerError } from '../../src/core/errors.js';
import { REPO } from '../helpers/daemon.js';

/**
 * The package's public surface: `banger` and `banger/contract` resolve through package.json's
 * exports map to built modules with .d.ts files, and no type reachable from those .d.ts files
 * (our own, not node_modules) is `any`.
 */
const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { exports: Record<string, { types: string; default: string } | string> };

test('exports: banger and banger/contract point at built modules and their .d.ts', () => {
  for (const key of ['.', './contract']) {
    const e = pkg.exports[key];
    assert.ok(e && typeof e === 'object', `exports['${key}']`);
    assert.ok(existsSync(join(REPO, e.default)), `${e.default} exists (npm run build)`);
    assert.ok(existsSync(join(REPO, e.types)), `${e.types} exists (tsconfig.sdk.json)`);
  }
});

test("import 'banger' resolves through the exports map; its BangerError is the daemon's error class", async () => {
  // Specifiers in variables: the main build compiles this file before the .d.ts exist.
  const [name, sub] = ['banger', 'banger/contract'];
  const sdk = (await import(name)) as typeof import('../../src/sdk/index.js');
  assert.equal(typeof sdk.Banger.connect, 'function');
  assert.equal(sdk.BangerError, CoreBangerError, 'one error class: instanceof works across the SDK and the wire');
  assert.equal(sdk.ErrorCode.Disconnected, 'E_DISCONNECTED');
  const contract = (await import(sub)) as typeof import('../../src/sdk/contract.js');
  assert.ok('vm.exec' in contract.methods);
});

/** `any` keywords in a declaration file, as file:line (comments and strings are not looked at). */
function anyIn(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
  const hits: string[] = [];
  const visit = (n: ts.Node) => {
    if (n.kind === ts.SyntaxKind.AnyKeyword) hits.push(`${file}:${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1}`);
    n.forEachChild(visit);
  };
  visit(sf);
  return hits;
}

/** The .d.ts files a declaration file reaches through relative imports and re-exports. */
function reachable(entry: string): string[] {
  const seen = new Set<string>();
  const walk = (f: string) => {
    if (seen.has(f)) return;
    seen.add(f);
    for (const spec of ts.preProcessFile(readFileSync(f, 'utf8'), true, true).importedFiles.map((x) => x.fileName)) {
      if (!spec.startsWith('.')) continue;
      const next = resolve(dirname(f), spec.replace(/\.js$/, '.d.ts'));
      if (existsSync(next)) walk(next);
    }
  };
  walk(entry);
  return [...seen];
}

test('nothing the SDK or the contract exports is `any` (every reachable .d.ts of ours)', () => {
  const files = [...new Set(['.', './contract'].flatMap((k) => reachable(join(REPO, (pkg.exports[k] as { types: string }).types))))];
  assert.ok(files.length > 8, `walked ${files.length} declaration files`);
  assert.ok(files.some((f) => f.endsWith('rpc/contract.d.ts')) && files.some((f) => f.endsWith('sdk/vms.d.ts')));
  assert.deepEqual(files.flatMap(anyIn), []);
});

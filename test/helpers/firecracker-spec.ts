import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';

/**
 * Firecracker's published OpenAPI (Swagger 2.0) specs, as shipped in test/fixtures/firecracker
 * (copied from firecracker-microvm/firecracker: src/firecracker/swagger/firecracker.yaml at the
 * v1.5.0 tag, the oldest release banger accepts (core/firecracker-version.ts), and v1.16.1; main
 * 1.17.0-dev), turned
 * into JSON Schema validators with ajv. Every object definition is compiled with
 * `additionalProperties: false` (Firecracker's serde `deny_unknown_fields`), so an added or
 * renamed field fails validation just as the real API refuses it.
 */
export const SPEC_DIR = resolve(new URL('.', import.meta.url).pathname, '..', '..', '..', 'test', 'fixtures', 'firecracker');
export const SPEC_FILES = {
  // the oldest release doctor and the driver accept (core/firecracker-version.ts MIN_FIRECRACKER)
  'v1.5.0': 'firecracker-api-v1.5.0.yaml',
  'v1.16.1': 'firecracker-api-v1.16.1.yaml',
  'main-1.17.0-dev': 'firecracker-api-main-1.17.0-dev.yaml',
} as const;
export type SpecVersion = keyof typeof SPEC_FILES;

type Schema = Record<string, unknown>;

function closeObjects(node: unknown): void {
  if (Array.isArray(node)) return node.forEach(closeObjects);
  if (!node || typeof node !== 'object') return;
  const o = node as Schema;
  if ((o.type === 'object' || o.properties) && o.additionalProperties === undefined && o.properties) o.additionalProperties = false;
  for (const v of Object.values(o)) closeObjects(v);
}

export interface FirecrackerSpec {
  version: SpecVersion;
  raw: { paths: Record<string, Record<string, unknown>>; definitions: Record<string, Schema> };
  /** Validator for one definition (closed objects). Throws for an unknown definition name. */
  validator(definition: string): ValidateFunction;
  /** The spec path template matching a concrete path and method, e.g. /drives/root → /drives/{drive_id}. */
  route(method: string, path: string): { template: string; params: Record<string, string>; bodyDefinition?: string } | undefined;
}

const cache = new Map<SpecVersion, FirecrackerSpec>();

export function loadSpec(version: SpecVersion, opts: { closed?: boolean } = {}): FirecrackerSpec {
  const closed = opts.closed ?? true;
  const hit = closed ? cache.get(version) : undefined;
  if (hit) return hit;
  const raw = parse(readFileSync(join(SPEC_DIR, SPEC_FILES[version]), 'utf8')) as FirecrackerSpec['raw'];
  const definitions = structuredClone(raw.definitions);
  if (closed) closeObjects(definitions);
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
  ajv.addSchema({ $id: 'fc', definitions });
  const validators = new Map<string, ValidateFunction>();
  const spec: FirecrackerSpec = {
    version,
    raw,
    validator(definition) {
      if (!definitions[definition]) throw new Error(`no definition ${definition} in Firecracker spec ${version}`);
      let v = validators.get(definition);
      if (!v) validators.set(definition, (v = ajv.compile({ $ref: `fc#/definitions/${definition}` })));
      return v;
    },
    route(method, path) {
      const m = method.toLowerCase();
      for (const [template, ops] of Object.entries(raw.paths)) {
        const names: string[] = [];
        const re = new RegExp('^' + template.replace(/\{([^}]+)\}/g, (_, n: string) => (names.push(n), '([^/]+)')) + '$');
        const hit = re.exec(path);
        if (!hit || !ops[m]) continue;
        const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(hit[i + 1]!)]));
        const op = ops[m] as { parameters?: { in: string; schema?: { $ref?: string } }[] };
        const ref = op.parameters?.find((p) => p.in === 'body')?.schema?.$ref;
        return { template, params, bodyDefinition: ref?.replace('#/definitions/', '') };
      }
      return undefined;
    },
  };
  if (closed) cache.set(version, spec);
  return spec;
}

/**
 * Environment overrides of the config file. Each variable names one config field; its value is
 * written into the file's object before the one `ConfigSchema` parse, so an override is checked
 * by exactly the rules the file is (a bad value is E_INVALID naming the variable and the field).
 */
export interface EnvOverride {
  env: string;
  /** The config field it replaces, e.g. ['network', 'subnet']. */
  path: string[];
  /** From the variable's text to the field's JSON value (default: the text). */
  value?: (text: string) => unknown;
}

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

export const ENV_OVERRIDES: readonly EnvOverride[] = [
  { env: 'BANGER_KERNEL_CATALOGS', path: ['kernelCatalogs'], value: list },
  { env: 'BANGER_DEBIAN_MIRROR', path: ['debianMirror'] },
  { env: 'BANGER_DEBIAN_KEYRING', path: ['debianKeyring'] },
  { env: 'BANGER_DEFAULT_KERNEL', path: ['defaultKernel'] },
  { env: 'BANGER_VMM', path: ['vm', 'vmm'] },
  { env: 'BANGER_QEMU', path: ['binaries', 'qemu'] },
  { env: 'BANGER_FIRECRACKER', path: ['binaries', 'firecracker'] },
  {
    env: 'BANGER_FIRECRACKER_JAILER',
    path: ['firecracker', 'jailer', 'enabled'],
    value: (t) => (t === '1' || t === 'true' ? true : t === '0' || t === 'false' ? false : t),
  },
  { env: 'BANGER_BRIDGE', path: ['network', 'bridge'] },
  { env: 'BANGER_SUBNET', path: ['network', 'subnet'] },
];

/**
 * `raw` (the file's parsed JSON) with every set override written in. Returns the new object and
 * which variable set which field (dotted path → variable), for error messages. `raw` is not
 * modified. A non-object in the way (e.g. `"network": 5`) is left for the schema to reject.
 */
export function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): { raw: unknown; fromEnv: Map<string, string> } {
  const fromEnv = new Map<string, string>();
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return { raw, fromEnv };
  const out: Record<string, unknown> = structuredClone(raw as Record<string, unknown>);
  for (const o of ENV_OVERRIDES) {
    const text = env[o.env];
    if (!text) continue;
    let node = out;
    for (const key of o.path.slice(0, -1)) {
      const next = node[key] ?? (node[key] = {});
      if (next === null || typeof next !== 'object' || Array.isArray(next)) break;
      node = next as Record<string, unknown>;
    }
    node[o.path.at(-1)!] = o.value ? o.value(text) : text;
    fromEnv.set(o.path.join('.'), o.env);
  }
  return { raw: out, fromEnv };
}

import { BangerError, ErrorCode } from '../core/errors.js';
import { httpFor } from '../core/http.js';
import type { ImageBase, OpContext } from './image-base.js';
import { parseReference } from './reference.js';
import { normaliseRegistryKey } from './registry/auth.js';
import { RegistryClient } from './registry/client.js';

/** `banger registry login`: verify the credentials against the registry, then store them. */
export async function login(
  ib: ImageBase,
  p: { registry: string; username: string; password: string },
  op: OpContext = {},
): Promise<{ registry: string; username: string }> {
  const registry = normaliseRegistryKey(p.registry);
  const ref = parseReference(`${registry}/banger/login-check`);
  const client = new RegistryClient(ref, {
    creds: { get: async () => ({ username: p.username, password: p.password, source: 'the login command' }) },
    log: ib.ctx.log,
    insecureRegistries: ib.ctx.config.insecureRegistries,
    mirrors: {},
    signal: op.signal,
    http: httpFor(ib.ctx.config),
  });
  await client.checkLogin();
  ib.creds.save(registry, p.username, p.password);
  return { registry, username: p.username };
}

/** `banger registry logout`: forget a stored login (E_NOT_FOUND when there is none). */
export function logout(ib: ImageBase, registry: string): { registry: string; removed: boolean } {
  const key = normaliseRegistryKey(registry);
  const removed = ib.creds.remove(key);
  if (!removed)
    throw new BangerError(ErrorCode.NotFound, `no stored login for registry '${key}'`, {
      hint: "logins made with 'banger registry login' can be removed; docker config entries are not touched",
    });
  return { registry: key, removed };
}

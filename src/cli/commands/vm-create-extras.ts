import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../../core/errors.js';

/** Largest --init-script accepted (the daemon's contract allows 1 MiB decoded). */
const MAX_INIT_SCRIPT_BYTES = 1024 * 1024;

/** `127.0.0.1:8080->80/tcp` (`[::1]:…` for IPv6), as docker prints a published port. */
export function formatPort(p: { hostIp: string; hostPort: number; guestPort: number; proto: string }): string {
  return `${p.hostIp.includes(':') ? `[${p.hostIp}]` : p.hostIp}:${p.hostPort}->${p.guestPort}/${p.proto}`;
}

/** commander collector for repeatable options. */
export function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/**
 * The `vm create` params for -p, --mount, --init-script and --keep-on-failure. The daemon
 * validates the specs (it names the field); here a relative HOSTDIR is made absolute against
 * the CLI's working directory, and the init script is read by the caller (its file may be
 * readable by the user only), sent base64.
 */
export async function createExtras(o: {
  publish?: string[];
  mount?: string[];
  initScript?: string;
  keepOnFailure?: boolean;
}): Promise<{ ports?: string[]; mounts?: string[]; initScript?: string; keepOnFailure?: boolean }> {
  const out: { ports?: string[]; mounts?: string[]; initScript?: string; keepOnFailure?: boolean } = {};
  if (o.publish?.length) out.ports = o.publish;
  if (o.mount?.length) out.mounts = o.mount.map(absoluteHostDir);
  if (o.initScript !== undefined) {
    const data = await readFile(o.initScript).catch((e) => {
      throw new BangerError(ErrorCode.NotFound, `--init-script ${o.initScript}: ${errorMessage(e)}`, {
        hint: 'give the path of a readable script file',
        details: { field: '--init-script', path: o.initScript },
      });
    });
    if (data.length > MAX_INIT_SCRIPT_BYTES)
      throw new BangerError(ErrorCode.TooLarge, `--init-script ${o.initScript} is ${data.length} bytes; at most ${MAX_INIT_SCRIPT_BYTES} are accepted`, {
        hint: 'copy large files in with --mount and keep the script short',
        details: { field: '--init-script' },
      });
    out.initScript = data.toString('base64');
  }
  if (o.keepOnFailure) out.keepOnFailure = true;
  return out;
}

/** `./site:/srv:ro` → `/cwd/site:/srv:ro` (a spec whose HOSTDIR is absolute, or empty, is left as is). */
export function absoluteHostDir(spec: string): string {
  const i = spec.indexOf(':');
  const host = i < 0 ? spec : spec.slice(0, i);
  if (!host || isAbsolute(host)) return spec;
  return resolve(host) + (i < 0 ? '' : spec.slice(i));
}

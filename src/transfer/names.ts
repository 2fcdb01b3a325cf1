import { BangerError, ErrorCode } from '../core/errors.js';
import type { Params } from '../rpc/contract.js';
import type { StreamCall, StreamMethod, StreamSinks } from '../rpc/stream.js';

/**
 * The host side of copies between the host and a guest (`banger vm cp` and the SDK's
 * `files.copyIn` / `copyOut`), shared by the CLI and the SDK: the tar pump into `vm.cpIn`
 * (send.ts), the checked extraction of what a guest sends through `vm.cpOut` (receive.ts,
 * extract.ts) and the placement of an accepted copy (place.ts). The callers keep their own
 * rules for where a copy lands (docker cp's for the CLI, exactly the path given for the SDK).
 */

/** Opens a `vm.cpIn` / `vm.cpOut` stream: the CLI's connects (and autostarts) first, the SDK's uses its socket. */
export type OpenStream = <M extends StreamMethod>(method: M, params: Params<M>, sinks: StreamSinks) => Promise<StreamCall>;

export const trimSlash = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);

/** A name a copy can carry as one tar member: not empty, `.`, `..` or `/`, no newline. `label` prefixes the message (`vm cp: `). */
export function checkCopyName(n: string, what: string, label = ''): void {
  if (n.includes('\n') || n === '' || n === '.' || n === '..' || n === '/')
    throw new BangerError(ErrorCode.Invalid, `${label}${what} '${n}' cannot be copied by name`);
}

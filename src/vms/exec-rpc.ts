import { z } from 'zod';
import { BangerError, ErrorCode } from '../core/errors.js';
import { MAX_PAYLOAD } from '../guest/agent-proto.js';
import { method, Name, type MethodContext, type MethodTable } from '../rpc/protocol.js';
import { agentConnection } from './agent.js';
import { startBridged } from './agent-stream.js';
import type { VmService } from './service.js';

const AbsPath = z.string().min(1).max(4096).regex(/^\//, 'must be an absolute path').refine((s) => !s.includes('\0'), 'must not contain NUL');
const Arg = z.string().max(65536).refine((s) => !s.includes('\0'), 'must not contain NUL');

export const ExecParams = z
  .object({
    name: Name,
    argv: z.array(Arg).min(1).max(4096),
    env: z.array(z.string().max(65536).regex(/^[A-Za-z_][A-Za-z0-9_]*=[^\0]*$/s, 'must be KEY=VALUE')).max(1024).optional(),
    workdir: AbsPath.optional(),
    user: z.string().max(64).regex(/^[A-Za-z0-9_.][A-Za-z0-9_.-]*(:[0-9]+)?$/, 'must be a user name or UID[:GID]').optional(),
    tty: z.boolean().optional(),
    rows: z.number().int().min(0).max(65535).optional(),
    cols: z.number().int().min(0).max(65535).optional(),
  })
  .strict();
const PathParams = z.object({ name: Name, path: AbsPath }).strict();

/** The agent connection of a running VM; E_IN_USE when stopped, E_TIMEOUT when no agent answers. */
async function connFor(svc: VmService, name: string, signal?: AbortSignal) {
  const vm = svc.get(name);
  if (!(await svc.observe(vm)).running) throw new BangerError(ErrorCode.InUse, `vm '${name}' is not running`, { hint: `start it: banger vm start ${name}` });
  try {
    return await agentConnection(svc.driver(vm.vmm), svc.handle(vm), 10_000);
  } catch (e) {
    if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'cancelled', { cause: e });
    throw new BangerError(ErrorCode.Timeout, `vm '${name}': the guest agent (protocol 2) did not answer`, {
      cause: e,
      hint: 'the agent starts with the guest; an image built by an older banger has a version 1 agent (pull the image again), and an image without it needs: banger vm ssh NAME',
    });
  }
}

function upgradeOf(ctx: MethodContext) {
  if (!ctx.upgrade) throw new BangerError(ErrorCode.Invalid, 'this method streams: call it on a connection that can be upgraded (banger CLI)');
  return ctx.upgrade;
}

async function stream(svc: VmService, name: string, req: Record<string, unknown>, ctx: MethodContext) {
  const upgrade = upgradeOf(ctx);
  if (Buffer.byteLength(JSON.stringify(req)) > MAX_PAYLOAD - 64) throw new BangerError(ErrorCode.TooLarge, `the request for vm '${name}' is larger than ${MAX_PAYLOAD - 64} bytes (argv + env)`, { details: { field: 'argv' } });
  const conn = await connFor(svc, name, ctx.signal);
  const attach = await startBridged(conn, req);
  upgrade(attach);
  return { streaming: true, stream: 1, agent: conn.info.version };
}

/** `vm.stat` (in the typed contract): lstat of a guest path through the agent. */
export async function guestStat(svc: VmService, name: string, path: string, signal?: AbortSignal) {
  const conn = await connFor(svc, name, signal);
  const r = await conn.request({ op: 'stat', path });
  if (r.ok !== true) throw new BangerError(ErrorCode.Agent, `vm '${name}': ${String(r.error)}`);
  return r as { ok: true; exists: boolean; type?: 'dir' | 'file' | 'symlink' | 'other'; mode?: number; size?: number };
}

/**
 * RPC methods of `vm exec` / `vm cp` (docs/agent.md). `vm.exec`, `vm.cpOut` and `vm.cpIn`
 * reply once the guest process started and then carry protocol v2 frames on the same
 * connection (stream 1); `vm.stat` (docker-cp path rules) is in the typed contract.
 */
export function agentMethods(svc: VmService): MethodTable {
  return {
    'vm.exec': method(ExecParams, (p, ctx) => {
      const { name, ...rest } = p;
      return stream(svc, name, { op: 'exec', ...rest }, ctx);
    }),
    'vm.cpOut': method(PathParams, (p, ctx) => stream(svc, p.name, { op: 'tar-out', path: p.path }, ctx)),
    'vm.cpIn': method(PathParams, (p, ctx) => stream(svc, p.name, { op: 'tar-in', path: p.path }, ctx)),
  };
}

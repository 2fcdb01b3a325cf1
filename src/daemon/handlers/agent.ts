import { BangerError, ErrorCode } from '../../core/errors.js';
import { MAX_PAYLOAD } from '../../core/agent-proto.js';
import type { z } from 'zod';
import type { ExecParams, StreamStarted } from '../../rpc/contract.js';
import type { MethodContext } from '../../rpc/protocol.js';
import { agentConnection } from '../../vms/agent.js';
import { startBridged } from '../../vms/agent-stream.js';
import type { VmService } from '../../vms/service.js';

/** The agent connection of a running VM (a paused one is resumed first); E_IN_USE when stopped, E_TIMEOUT when no agent answers. */
async function connFor(svc: VmService, name: string, signal?: AbortSignal, resumed?: (ms: number) => void) {
  const ms = await svc.resumeIfPaused(name, { signal });
  if (ms !== undefined) resumed?.(ms);
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
  if (Buffer.byteLength(JSON.stringify(req)) > MAX_PAYLOAD - 64)
    throw new BangerError(ErrorCode.TooLarge, `the request for vm '${name}' is larger than ${MAX_PAYLOAD - 64} bytes (argv + env)`, {
      details: { field: 'argv' },
    });
  let resumedMs: number | undefined;
  const conn = await connFor(svc, name, ctx.signal, (ms) => (resumedMs = ms));
  const attach = await startBridged(conn, req);
  upgrade(attach);
  const r: StreamStarted = { streaming: true, stream: 1, agent: conn.info.version, ...(resumedMs === undefined ? {} : { resumedMs }) };
  return r;
}

/** `vm.stat` (in the typed contract): lstat of a guest path through the agent. */
export async function guestStat(svc: VmService, name: string, path: string, signal?: AbortSignal) {
  const conn = await connFor(svc, name, signal);
  const r = await conn.request({ op: 'stat', path });
  if (r.ok !== true) throw new BangerError(ErrorCode.Agent, `vm '${name}': ${String(r.error)}`);
  return r as { ok: true; exists: boolean; type?: 'dir' | 'file' | 'symlink' | 'other'; mode?: number; size?: number };
}

/** `vm.exec`: starts the command, then the connection streams (protocol v2 frames, stream 1). */
export function execStream(svc: VmService, p: z.infer<typeof ExecParams>, ctx: MethodContext) {
  const { name, ...rest } = p;
  return stream(svc, name, { op: 'exec', ...rest }, ctx);
}

/** `vm.cpOut` / `vm.cpIn`: the guest side of vm cp, as a tar stream out of / into a path. */
export function tarStream(svc: VmService, dir: 'out' | 'in', p: { name: string; path: string }, ctx: MethodContext) {
  return stream(svc, p.name, { op: dir === 'out' ? 'tar-out' : 'tar-in', path: p.path }, ctx);
}

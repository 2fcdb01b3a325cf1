import { lstat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { BangerError, ErrorCode } from '../core/errors.js';
import type { RpcClient } from '../rpc/client.js';
import { StreamCall } from '../rpc/stream.js';
import { checkCopyName, type OpenStream, trimSlash } from '../transfer/names.js';
import { receiveTree } from '../transfer/receive.js';
import { sendTree } from '../transfer/send.js';
import { checkSignal } from './operation.js';

/*
 * The SDK's copies: tar streams through the guest agent (`vm.cpIn` / `vm.cpOut`), by the same
 * code as `banger vm cp` (src/transfer/: GNU tar on this host into the guest; banger's own
 * checked extraction out of it). Unlike `banger vm cp` (docker cp's rules), the SDK copies to
 * exactly the path given.
 */

const opener =
  (rpc: RpcClient): OpenStream =>
  (method, params, sinks) =>
    StreamCall.open(rpc.socketPath, method, params, sinks);

export async function copyIn(rpc: RpcClient, vm: string, hostPath: string, guestPath: string, signal?: AbortSignal): Promise<void> {
  const src = resolve(hostPath);
  if (!(await lstat(src).catch(() => undefined))) throw new BangerError(ErrorCode.NotFound, `${hostPath}: no such file or directory`);
  const dst = trimSlash(guestPath);
  const into = dirname(dst);
  const parent = await rpc.request('vm.stat', { name: vm, path: into }, { signal });
  if (!parent.exists || parent.type !== 'dir') throw new BangerError(ErrorCode.NotFound, `${vm}:${into} is not a directory`);
  checkCopyName(basename(src), 'source');
  checkCopyName(basename(dst), 'destination');
  checkSignal(signal);
  await sendTree({ open: opener(rpc), vm, src, into, as: basename(dst), signal });
}

/**
 * guest → host, to exactly `hostPath` (which must not exist). The guest's stream is checked
 * entry by entry (src/transfer/extract.ts: only SRC and what is under it, no devices, no writes
 * through symlinks, bounded names and entry counts); no owners or setuid bits are kept.
 */
export async function copyOut(rpc: RpcClient, vm: string, guestPath: string, hostPath: string, signal?: AbortSignal): Promise<void> {
  const src = trimSlash(guestPath);
  const s = await rpc.request('vm.stat', { name: vm, path: src }, { signal });
  if (!s.exists) throw new BangerError(ErrorCode.NotFound, `${vm}:${src}: no such file or directory`);
  const dst = resolve(hostPath);
  if (await lstat(dst).catch(() => undefined))
    throw new BangerError(ErrorCode.Exists, `${hostPath} already exists`, { hint: 'copyOut writes a new path: remove it or pick another name' });
  checkCopyName(basename(src), 'source');
  checkSignal(signal);
  await receiveTree({ open: opener(rpc), vm, src, final: dst, signal });
}

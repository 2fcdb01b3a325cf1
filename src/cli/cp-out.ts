import { stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import { checkCopyName, trimSlash } from '../transfer/names.js';
import { receiveTree } from '../transfer/receive.js';
import type { Cli } from './context.js';
import { transferOpener } from './stream-client.js';

export interface CopyOutOptions {
  /** `-a`: restore the owners the guest sent (only when the CLI runs as root). */
  archive?: boolean;
}

/**
 * VM → host, with docker cp's rules for DST: an existing directory receives SRC inside it as
 * basename(SRC) (a directory of that name already there is merged into); otherwise SRC becomes
 * DST. The guest's stream is checked and placed by `receiveTree` (src/transfer/receive.ts,
 * shared with the SDK): a refused or broken stream leaves nothing behind. The first SIGINT or
 * SIGTERM cancels the copy.
 */
export async function copyOut(c: Cli, vm: string, src: string, dstArg: string, o: CopyOutOptions = {}): Promise<void> {
  const s = await c.call('vm.stat', { name: vm, path: src });
  if (!s.exists) throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${src}: no such file or directory`);
  const dst = resolve(dstArg);
  const d = await stat(dst).catch(() => undefined);
  const top = basename(trimSlash(src));
  checkCopyName(top, 'source', 'vm cp: ');
  if (d && !d.isDirectory() && s.type === 'dir') throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${vm}:${src} onto the file ${dstArg}`);
  if (!d && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${dstArg} does not exist`);
  const owners = !!o.archive && process.geteuid?.() === 0;
  if (o.archive && !owners) process.stderr.write('vm cp: -a: not running as root, so the copy belongs to you (owners are not restored)\n');
  const ac = new AbortController();
  const onSignal = () => ac.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await receiveTree({
      open: transferOpener(c, vm),
      vm,
      src,
      final: d?.isDirectory() ? join(dst, top) : dst,
      owners,
      label: 'vm cp: ',
      signal: ac.signal,
      // tar's messages from the guest: shown, without terminal control sequences
      onStderr: (b) => void process.stderr.write(b.toString('utf8').replace(/[\x00-\x08\x0b-\x1f\x7f\x9b]/g, '?')),
      onLeftover: (dir, e) => void process.stderr.write(`vm cp: could not remove the temporary directory ${dir}: ${errorMessage(e)}\n`),
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

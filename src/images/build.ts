import { BangerError, ErrorCode } from '../core/errors.js';
import { ExecError, toolEnv, type Exec } from '../core/exec.js';
import { humanSize } from '../core/fsutil.js';

/**
 * Build an ext4 root filesystem from a directory with `mkfs.ext4 -d` (no mount, no loop
 * device), 4 KiB blocks, no orphan_file (old guest kernels), root owned by 0:0, then
 * require `e2fsck -fn` to be clean. Size: `sizeBytes` when given, else content × 1.5 with
 * a 1 GiB floor, rounded up to MiB. Enough inodes for the tree are requested explicitly.
 */
export const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

export async function measureTree(exec: Exec, dir: string, signal?: AbortSignal): Promise<{ bytes: number; inodes: number }> {
  const b = await exec(['du', '-s', '-x', '-B1', dir], { env: toolEnv(), signal });
  const i = await exec(['du', '-s', '-x', '--inodes', dir], { env: toolEnv(), signal });
  return { bytes: parseInt(b.stdout, 10), inodes: parseInt(i.stdout, 10) };
}

export function defaultSize(contentBytes: number): number {
  return Math.ceil(Math.max(GiB, contentBytes * 1.5) / MiB) * MiB;
}

export async function buildExt4(
  exec: Exec,
  opts: { dir: string; out: string; sizeBytes?: number; signal?: AbortSignal; onStage?: (stage: string) => void },
): Promise<{ sizeBytes: number; contentBytes: number }> {
  const tree = await measureTree(exec, opts.dir, opts.signal);
  const sizeBytes = opts.sizeBytes ?? defaultSize(tree.bytes);
  if (sizeBytes % 4096) throw new BangerError(ErrorCode.Invalid, `--size ${sizeBytes} is not a multiple of 4096 bytes`);
  if (opts.sizeBytes !== undefined && opts.sizeBytes < tree.bytes * 1.05) {
    throw new BangerError(ErrorCode.Invalid, `--size ${humanSize(opts.sizeBytes)} is too small for ${humanSize(tree.bytes)} of content`, {
      hint: `use at least --size ${Math.ceil((tree.bytes * 1.2) / MiB)}M, or omit --size`,
    });
  }
  const defaultInodes = Math.floor(sizeBytes / 16384);
  const wantInodes = Math.ceil(tree.inodes * 1.3) + 1024;
  const argv = ['mkfs.ext4', '-q', '-b', '4096', '-O', '^orphan_file', '-L', 'rootfs', '-E', 'root_owner=0:0'];
  if (wantInodes > defaultInodes) argv.push('-N', String(wantInodes));
  argv.push('-d', opts.dir, opts.out, `${sizeBytes / 1024}k`);
  opts.onStage?.('mkfs');
  try {
    await exec(argv, { env: toolEnv(), signal: opts.signal });
  } catch (e) {
    if (e instanceof ExecError) {
      throw new BangerError(ErrorCode.Exec, `step mkfs: mkfs.ext4 failed (exit ${e.exitCode}): ${e.stderr.trim().split('\n').slice(-3).join(' ')}`, {
        hint: 'is the --size large enough? see the daemon log',
        cause: e,
        details: { step: 'mkfs' },
      });
    }
    throw e;
  }
  opts.onStage?.('fsck');
  const ck = await exec(['e2fsck', '-f', '-n', opts.out], { env: toolEnv(), signal: opts.signal, allowFailure: true });
  if (ck.exitCode !== 0) {
    throw new BangerError(
      ErrorCode.Exec,
      `step fsck: e2fsck -fn reported problems (exit ${ck.exitCode}) in the new filesystem: ${(ck.stdout + ck.stderr).trim().split('\n').slice(-3).join(' ')}`,
      {
        hint: 'this is a bug in banger or e2fsprogs; please report it with the daemon log',
        details: { step: 'fsck' },
      },
    );
  }
  return { sizeBytes, contentBytes: tree.bytes };
}

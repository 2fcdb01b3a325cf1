import { lstat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { checkCopyName, trimSlash } from '../../transfer/names.js';
import { sendTree } from '../../transfer/send.js';
import type { Cli } from '../context.js';
import { copyOut } from '../cp-out.js';
import { transferOpener } from '../stream-client.js';

/** `NAME:/path` → {vm, path}; a plain path → {path}. `./x:y` and `/x:y` are local paths. */
export function parseCpArg(arg: string): { vm?: string; path: string } {
  const m = /^([a-zA-Z0-9][a-zA-Z0-9._-]*):(.*)$/.exec(arg);
  if (!m || arg.startsWith('/') || arg.startsWith('.')) return { path: arg };
  if (!m[2]!.startsWith('/')) throw new BangerError(ErrorCode.Usage, `vm cp: '${arg}': the path inside the VM must be absolute (NAME:/path)`);
  return { vm: m[1]!, path: m[2]! };
}

/** host → VM, with the same rules applied to the guest's DST. */
async function copyIn(c: Cli, src: string, vm: string, dstArg: string): Promise<void> {
  const st = await lstat(src).catch(() => undefined);
  if (!st) throw new BangerError(ErrorCode.NotFound, `vm cp: ${src}: no such file or directory`);
  const dst = trimSlash(dstArg);
  const d = await c.call('vm.stat', { name: vm, path: dst });
  const srcPath = resolve(src);
  checkCopyName(basename(srcPath), 'source', 'vm cp: ');
  let into = dst;
  let newName: string | undefined;
  if (!d.exists || d.type !== 'dir') {
    if (!d.exists && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${vm}:${dstArg} does not exist`);
    if (d.exists && st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${src} onto the file ${vm}:${dstArg}`);
    into = dirname(dst);
    const parent = await c.call('vm.stat', { name: vm, path: into });
    if (!parent.exists || parent.type !== 'dir') throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${into} is not a directory`);
    newName = basename(dst);
    checkCopyName(newName, 'destination', 'vm cp: ');
  }
  const toStderr = (b: Buffer) => void process.stderr.write(b);
  await sendTree({
    open: transferOpener(c, vm),
    vm,
    src: srcPath,
    into,
    as: newName,
    label: 'vm cp: ',
    sinks: { stdout: toStderr, stderr: toStderr },
  });
}

export function registerCpCommand(vm: Command, cli: () => Cli): void {
  vm.command('cp')
    .description('copy files and directories between the host and a VM (through the guest agent, streamed as tar)')
    .argument('<src>', 'source: a host path or NAME:/path')
    .argument('<dst>', 'destination: a host path or NAME:/path')
    .option('-a, --archive', 'out of a VM: restore owners (numeric) and exact modes; needs root (setuid bits are dropped all the same)')
    .addHelpText(
      'after',
      "\nRules (as docker cp): a directory copied to a path that does not exist creates it with the\nsource's contents; to an existing directory, it lands inside it (a directory of the same\nname there is merged into); a file replaces a file. Needs tar in the guest.\n\nInto a VM: tar in the guest (as root) keeps modes, owners (numeric), mtimes, setuid bits and\nsymlinks, and refuses members with '..' or that would be written through a symlink.\n\nOut of a VM (the guest is untrusted): banger reads the guest's tar stream itself and refuses\nthe whole copy, writing nothing, when an entry\n  - is not SRC's own name (its basename) or under it, e.g. '.bashrc' when SRC is /etc/hostname;\n  - is absolute, or has a '.', '..' or empty component (so no '.' entry for DST itself);\n  - comes before its parent directory, or repeats a name;\n  - is a device node, a FIFO, a socket or another special file;\n  - is a hard link to anything but a file or symlink earlier in the same copy;\n  - or when the stream is malformed, holds more than 1,000,000 entries, a name over 4096\n    bytes, or over 1 MiB of PAX / long-name records before one entry.\nNothing is written through a symlink: the copy is built in a new private directory beside\nDST and renamed into place; a file or symlink already at the target name is replaced, never\nfollowed. Setuid, setgid and sticky bits and xattrs are always dropped; modes are masked by\nyour umask; mtimes and symlinks (as symlinks) are kept; files belong to you. With -a as root\nowners (numeric) are restored and modes are exact (still without setuid/setgid/sticky).\n\nExamples:\n  banger vm cp ./site testbox:/srv/site\n  banger vm cp testbox:/var/log/syslog ./syslog\n  sudo banger vm cp -a testbox:/etc ./guest-etc",
    )
    .action(async (srcArg: string, dstArg: string, opts: { archive?: boolean }) => {
      const c = cli();
      const src = parseCpArg(srcArg);
      const dst = parseCpArg(dstArg);
      if (!!src.vm === !!dst.vm)
        throw new BangerError(ErrorCode.Usage, 'vm cp: exactly one of SRC and DST must be NAME:/path', {
          hint: 'banger vm cp ./file testbox:/tmp/   or   banger vm cp testbox:/etc/hostname .',
        });
      if (src.vm) await copyOut(c, src.vm, src.path, dst.path, { archive: !!opts.archive });
      else await copyIn(c, src.path, dst.vm!, dst.path);
      c.close();
    });
}

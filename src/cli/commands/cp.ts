import { lstat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { exitOf, spawnPiped } from '../../core/exec.js';
import type { Cli } from '../context.js';
import { resumedLine, StreamCall } from '../stream-client.js';
import { checkCpName, copyOut } from '../cp-out.js';

/** `NAME:/path` → {vm, path}; a plain path → {path}. `./x:y` and `/x:y` are local paths. */
export function parseCpArg(arg: string): { vm?: string; path: string } {
  const m = /^([a-zA-Z0-9][a-zA-Z0-9._-]*):(.*)$/.exec(arg);
  if (!m || arg.startsWith('/') || arg.startsWith('.')) return { path: arg };
  if (!m[2]!.startsWith('/')) throw new BangerError(ErrorCode.Usage, `vm cp: '${arg}': the path inside the VM must be absolute (NAME:/path)`);
  return { vm: m[1]!, path: m[2]! };
}

/** Escapes a name for a GNU tar --transform expression `s,RE,REPL,S`. */
const reEsc = (s: string) => s.replace(/[\\.[\]*^$,]/g, (c) => `\\${c}`);
const replEsc = (s: string) => s.replace(/[\\&,]/g, (c) => `\\${c}`);
const trimSlash = (p: string) => (p.length > 1 ? p.replace(/\/+$/, '') : p);

async function localTar(argv: string[], feed: (child: ReturnType<typeof spawnPiped>) => Promise<number>): Promise<void> {
  const child = spawnPiped(argv);
  const err: Buffer[] = [];
  child.stderr!.on('data', (d: Buffer) => err.push(d));
  const exited = exitOf(child, argv);
  const guest = await feed(child).catch(async (e) => {
    child.kill('SIGKILL');
    await exited.catch(() => {});
    throw e;
  });
  const code = await exited;
  if (code !== 0)
    throw new BangerError(ErrorCode.Exec, `vm cp: local tar failed (exit ${code}): ${Buffer.concat(err).toString().trim().split('\n').slice(-3).join('; ')}`);
  if (guest !== 0) throw new BangerError(ErrorCode.Exec, `vm cp: tar in the guest failed (exit ${guest})`);
}

/** host → VM, with the same rules applied to the guest's DST. */
async function copyIn(c: Cli, src: string, vm: string, dstArg: string): Promise<void> {
  const st = await lstat(src).catch(() => undefined);
  if (!st) throw new BangerError(ErrorCode.NotFound, `vm cp: ${src}: no such file or directory`);
  const dst = trimSlash(dstArg);
  const d = await c.call('vm.stat', { name: vm, path: dst });
  const srcPath = resolve(src);
  const srcName = basename(srcPath);
  checkCpName(srcName, 'source');
  let into = dst;
  let newName: string | undefined;
  if (!d.exists || d.type !== 'dir') {
    if (!d.exists && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${vm}:${dstArg} does not exist`);
    if (d.exists && st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${src} onto the file ${vm}:${dstArg}`);
    into = dirname(dst);
    const parent = await c.call('vm.stat', { name: vm, path: into });
    if (!parent.exists || parent.type !== 'dir') throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${into} is not a directory`);
    newName = basename(dst);
    checkCpName(newName, 'destination');
  }
  const argv = [
    'tar',
    '-c',
    '--numeric-owner',
    '-f',
    '-',
    '-C',
    dirname(srcPath),
    ...(newName ? [`--transform=s,^${reEsc(srcName)}\\(/\\|$\\),${replEsc(newName)}\\1,S`] : []),
    srcName,
  ];
  await localTar(argv, async (child) => {
    // Listen (paused) before the first await: Node discards the output of a child that exits
    // while nobody listens to its stdout, and a small tree's tar exits at once.
    let call: StreamCall | undefined;
    let early: Buffer | undefined;
    const ended = new Promise<void>((r) => child.stdout!.once('end', r));
    child.stdout!.on('data', (b: Buffer) => {
      child.stdout!.pause();
      if (!call) early = early ? Buffer.concat([early, b]) : b;
      else void call.write(b).then(() => child.stdout!.resume());
    });
    call = await StreamCall.open(c, 'vm.cpIn', { name: vm, path: into }, { stdout: (b) => process.stderr.write(b), stderr: (b) => process.stderr.write(b) });
    resumedLine(vm, call.reply.resumedMs);
    if (early) await call.write(early);
    child.stdout!.resume();
    void ended.then(() => call!.eof());
    return (await call.done).code;
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

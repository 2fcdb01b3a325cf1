import { lstat, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { exitOf, spawnPiped } from '../../core/exec.js';
import type { Cli } from '../context.js';
import { StreamCall } from '../stream-client.js';

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

function checkName(n: string, what: string): void {
  if (n.includes('\n') || n === '' || n === '.' || n === '..') throw new BangerError(ErrorCode.Invalid, `vm cp: ${what} '${n}' cannot be copied by name`);
}

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
  if (code !== 0) throw new BangerError(ErrorCode.Exec, `vm cp: local tar failed (exit ${code}): ${Buffer.concat(err).toString().trim().split('\n').slice(-3).join('; ')}`);
  if (guest !== 0) throw new BangerError(ErrorCode.Exec, `vm cp: tar in the guest failed (exit ${guest})`);
}

/** VM → host, with docker cp's rules for DST (existing dir: inside it; else: named DST). */
async function copyOut(c: Cli, vm: string, src: string, dstArg: string): Promise<void> {
  const s = await c.call('vm.stat', { name: vm, path: src });
  if (!s.exists) throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${src}: no such file or directory`);
  const dst = resolve(dstArg);
  const d = await stat(dst).catch(() => undefined);
  const srcName = basename(trimSlash(src));
  checkName(srcName, 'source');
  if (d && !d.isDirectory() && s.type === 'dir') throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${vm}:${src} onto the file ${dstArg}`);
  if (!d && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${dstArg} does not exist`);
  const into = d?.isDirectory() ? dst : await mkdtemp(join(dirname(dst), '.banger-cp-'));
  try {
    const argv = ['tar', '-x', '-p', '--numeric-owner', '-f', '-', '-C', into];
    await localTar(argv, async (child) => {
      let call: StreamCall | undefined;
      const sinks = {
        stdout: (b: Buffer) => child.stdin!.write(b) || (child.stdin!.once('drain', () => call?.resume()), false),
        stderr: (b: Buffer) => process.stderr.write(b),
      };
      child.stdin!.on('error', () => {});
      call = await StreamCall.open(c, 'vm.cpOut', { name: vm, path: src }, sinks);
      const exit = await call.done;
      child.stdin!.end();
      return exit.code;
    });
    if (!d?.isDirectory()) await rename(join(into, srcName), dst);
  } finally {
    if (!d?.isDirectory()) await rm(into, { recursive: true, force: true });
  }
}

/** host → VM, with the same rules applied to the guest's DST. */
async function copyIn(c: Cli, src: string, vm: string, dstArg: string): Promise<void> {
  const st = await lstat(src).catch(() => undefined);
  if (!st) throw new BangerError(ErrorCode.NotFound, `vm cp: ${src}: no such file or directory`);
  const dst = trimSlash(dstArg);
  const d = await c.call('vm.stat', { name: vm, path: dst });
  const srcPath = resolve(src);
  const srcName = basename(srcPath);
  checkName(srcName, 'source');
  let into = dst;
  let newName: string | undefined;
  if (!d.exists || d.type !== 'dir') {
    if (!d.exists && dstArg.endsWith('/')) throw new BangerError(ErrorCode.NotFound, `vm cp: destination directory ${vm}:${dstArg} does not exist`);
    if (d.exists && st.isDirectory()) throw new BangerError(ErrorCode.Invalid, `vm cp: cannot copy directory ${src} onto the file ${vm}:${dstArg}`);
    into = dirname(dst);
    const parent = await c.call('vm.stat', { name: vm, path: into });
    if (!parent.exists || parent.type !== 'dir') throw new BangerError(ErrorCode.NotFound, `vm cp: ${vm}:${into} is not a directory`);
    newName = basename(dst);
    checkName(newName, 'destination');
  }
  const argv = ['tar', '-c', '--numeric-owner', '-f', '-', '-C', dirname(srcPath), ...(newName ? [`--transform=s,^${reEsc(srcName)}\\(/\\|$\\),${replEsc(newName)}\\1,S`] : []), srcName];
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
    .addHelpText(
      'after',
      "\nRules (as docker cp): a directory copied to a path that does not exist creates it with the\nsource's contents; to an existing directory, it lands inside it. Modes, owners (numeric),\nmtimes, setuid bits and symlinks (as symlinks) are kept; entries escaping the destination are\nrefused by tar. Needs tar in the guest.\n\nExamples:\n  banger vm cp ./site testbox:/srv/site\n  banger vm cp testbox:/var/log/syslog ./syslog\n  banger vm cp testbox:/etc ./guest-etc",
    )
    .action(async (srcArg: string, dstArg: string) => {
      const c = cli();
      const src = parseCpArg(srcArg);
      const dst = parseCpArg(dstArg);
      if (!!src.vm === !!dst.vm) throw new BangerError(ErrorCode.Usage, 'vm cp: exactly one of SRC and DST must be NAME:/path', { hint: 'banger vm cp ./file testbox:/tmp/   or   banger vm cp testbox:/etc/hostname .' });
      if (src.vm) await copyOut(c, src.vm, src.path, dst.path);
      else await copyIn(c, src.path, dst.vm!, dst.path);
      c.close();
    });
}

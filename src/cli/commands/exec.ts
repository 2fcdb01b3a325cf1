import { constants } from 'node:os';
import type { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { Cli } from '../context.js';
import { StreamCall, resumedLine } from '../stream-client.js';
import { printError } from '../print-error.js';

export interface ExecOptions {
  interactive?: boolean;
  tty?: boolean;
  env?: string[];
  workdir?: string;
  user?: string;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * Runs argv in the VM through the guest agent and returns its exit code (128+N for a death by
 * signal N). stdout/stderr stream separately and binary-safe; with `interactive` stdin is
 * forwarded (else the command sees EOF); Ctrl-C / SIGTERM / SIGHUP are forwarded to the
 * guest process group; a second SIGINT or SIGTERM abandons it (the CLI ends with 128+N, the
 * agent kills the process group). With `tty` a pty is allocated, the local terminal goes raw and
 * SIGWINCH becomes a resize. The CLI ends with an error when its stream dies.
 */
export async function runExec(c: Cli, name: string, argv: string[], o: ExecOptions): Promise<number> {
  if (!argv.length) throw new BangerError(ErrorCode.Usage, 'vm exec: a command is required after --', { hint: 'banger vm exec NAME -- CMD [ARG…]' });
  const tty = !!o.tty;
  const stdinTty = !!process.stdin.isTTY;
  let call: StreamCall | undefined;
  const sinks = {
    stdout: (d: Buffer) => process.stdout.write(d, () => call?.resume()),
    stderr: (d: Buffer) => process.stderr.write(d, () => call?.resume()),
  };
  // Signal handlers go in before the stream opens: output (and the user's Ctrl-C) can arrive
  // before this function resumes, and an unhandled SIGINT would kill the CLI, not the command.
  const early: number[] = [];
  let stops = 0;
  let abandonCode = 0;
  let abandon!: (code: number) => void;
  const abandoned = new Promise<number>((r) => (abandon = r));
  const stop = new AbortController();
  const forward = (sig: NodeJS.Signals) => () => {
    const signo = constants.signals[sig];
    // The first SIGINT/SIGTERM goes to the command; a second one gives up on a command that
    // ignores it (or a guest that no longer answers): the CLI ends and the agent kills the
    // command's process group.
    if ((sig === 'SIGINT' || sig === 'SIGTERM') && ++stops >= 2) {
      process.stderr.write(`banger: second ${sig}: abandoning the command (its process group is killed)\n`);
      abandonCode = 128 + signo;
      stop.abort();
      abandon(abandonCode);
      return;
    }
    if (call) call.signal(signo);
    else early.push(signo);
  };
  const handlers: Array<[NodeJS.Signals, () => void]> = (['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as NodeJS.Signals[]).map((sig) => [sig, forward(sig)]);
  for (const [sig, fn] of handlers) process.on(sig, fn);
  const unhook = () => {
    for (const [sig, fn] of handlers) process.off(sig, fn);
  };
  try {
    call = await StreamCall.open(
      c,
      'vm.exec',
      {
        name,
        argv,
        env: o.env,
        workdir: o.workdir,
        user: o.user,
        tty,
        rows: tty ? process.stdout.rows : undefined,
        cols: tty ? process.stdout.columns : undefined,
      },
      sinks,
      stop.signal,
    );
    resumedLine(name, call.reply.resumedMs);
  } catch (e) {
    unhook();
    if (stop.signal.aborted) return abandonCode;
    // The guest could not start the command: 127 not found, 126 not runnable (as docker exec).
    const code = e instanceof BangerError ? e.details?.exitCode : undefined;
    if (typeof code !== 'number') throw e;
    printError(e);
    return code;
  }
  const s = call;
  for (const sig of early.splice(0)) s.signal(sig);
  const onWinch = () => s.resize(process.stdout.rows ?? 24, process.stdout.columns ?? 80);
  if (tty) process.on('SIGWINCH', onWinch);
  const rawSet = tty && o.interactive && stdinTty;
  if (rawSet) process.stdin.setRawMode(true);
  const onStdin = (d: Buffer) => {
    process.stdin.pause();
    void s.write(d).then(() => process.stdin.resume());
  };
  if (o.interactive) {
    process.stdin.on('data', onStdin);
    process.stdin.once('end', () => s.eof());
    process.stdin.resume();
  } else s.eof();
  try {
    return await Promise.race([s.done.then((e) => e.code), abandoned]);
  } finally {
    unhook();
    process.off('SIGWINCH', onWinch);
    if (rawSet) process.stdin.setRawMode(false);
    process.stdin.off('data', onStdin);
    process.stdin.pause();
    if (!process.stdin.isTTY) process.stdin.destroy();
  }
}

export function registerExecCommand(vm: Command, cli: () => Cli): void {
  vm.command('exec')
    .description('run a command in the VM through the guest agent (no SSH, no network needed) and exit with its exit code')
    .argument('<name>', 'VM name')
    .argument('<cmd...>', 'command and arguments (put them after --)')
    .option('-i, --interactive', 'forward stdin to the command (otherwise it reads EOF)')
    .option('-t, --tty', 'allocate a pty in the guest (raw local terminal, window size forwarded)')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect)
    .option('-w, --workdir <dir>', "working directory in the guest (absolute; default: the user's home, / for root)")
    .option('-u, --user <user>', "run as USER, UID or UID:GID from the guest's /etc/passwd (default: root)")
    .addHelpText(
      'after',
      "\nstdout and stderr stay separate and binary-safe; the exit code is passed through (128+N when\nthe command dies of signal N). Ctrl-C and SIGTERM are forwarded to the command; a second one\nabandons it (its process group is killed). Several execs may run at once.\n\nExamples:\n  banger vm exec testbox -- uname -a\n  banger vm exec -i testbox -- sh -c 'wc -c' < big.bin\n  banger vm exec -it testbox -- bash\n  banger vm exec --env DEBUG=1 --workdir /srv --user www-data testbox -- ./serve",
    )
    .action(async (name: string, cmd: string[], o: ExecOptions) => {
      const c = cli();
      process.exitCode = await runExec(c, name, cmd, o);
      c.close();
    });
}

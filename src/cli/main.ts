import { Command, CommanderError } from 'commander';
import { BangerError, ErrorCode } from '../core/errors.js';
import { BANGER_VERSION } from '../core/version.js';
import { Cli } from './context.js';

type Register = (program: Command, cli: () => Cli) => void;

/**
 * The command groups, in help order, each loaded only when used: the bundle is split per
 * group (scripts/bundle.mjs), so `banger kernel list` never parses or evaluates the VM
 * commands, and `banger --version` loads none. `commands` names the top-level commands a group
 * registers; a name found in no group (a typo, `help`) loads them all, so commander still
 * answers it with its usual error or help. test/unit/cli-lazy-groups.test.ts checks the table.
 */
const groups: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['kernel'], load: async () => (await import('./commands/kernel.js')).registerKernelCommands },
  { commands: ['image', 'registry'], load: async () => (await import('./commands/image.js')).registerImageCommands },
  { commands: ['vm', 'ps', 'run', 'ssh-config'], load: async () => (await import('./commands/vm.js')).registerVmCommands },
  { commands: ['daemon'], load: async () => (await import('./commands/daemon.js')).registerDaemonCommands },
  { commands: ['system'], load: async () => (await import('./commands/system.js')).registerSystemCommands },
  { commands: ['doctor'], load: async () => (await import('./commands/doctor.js')).registerDoctorCommand },
  { commands: ['mcp'], load: async () => (await import('./commands/mcp.js')).registerMcpCommand },
];

/** The groups argv needs: the one owning its command, none for a bare --version, else all. */
export function groupsFor(argv: string[]): typeof groups {
  const args = argv.slice(2);
  const first = args.find((a) => !a.startsWith('-'));
  if (first === undefined) return args.some((a) => a === '-V' || a === '--version') && !args.some((a) => a === '-h' || a === '--help') ? [] : groups;
  const owner = groups.find((g) => g.commands.includes(first));
  return owner ? [owner] : groups;
}

/** The program with the command groups `argv` needs (every group when argv is left out). */
export async function buildProgram(argv?: string[]): Promise<{ program: Command; cli: () => Cli }> {
  const program = new Command('banger');
  let instance: Cli | undefined;
  const cli = () => (instance ??= new Cli(program.opts()));
  program
    .description(
      'A disposable Linux microVM in one command.\n\nQuick start:\n  banger kernel list --available\n  banger kernel pull debian-cloud-amd64\n  banger image pull docker.io/library/debian:bookworm\n  banger vm create --image debian-bookworm --name testbox --nat\n  banger vm ssh testbox -- uname -a',
    )
    .version(BANGER_VERSION)
    .option('--json', 'print exactly one JSON document on stdout (logs and progress go to stderr)')
    .option('--debug', 'print stack traces for unexpected errors')
    .showSuggestionAfterError(true)
    .configureHelp({ sortSubcommands: false, showGlobalOptions: true })
    .addHelpText(
      'after',
      "\nEnvironment: BANGER_ROOT (state dir), BANGER_SOCKET (daemon socket), BANGER_CONFIG (config file).\nRun 'banger <command> --help' for details on a command.",
    );
  // Before any subcommand exists: commander copies this setting into each subcommand as it is
  // created, so usage errors anywhere throw CommanderError (exit 2) instead of exiting with 1.
  program.exitOverride();
  const wanted = argv ? groupsFor(argv) : groups;
  for (const register of await Promise.all(wanted.map((g) => g.load()))) register(program, cli);
  return { program, cli };
}

/**
 * A reader that goes away (`banger vm create --help | head`) is not an error: stop quietly, as
 * coreutils do, instead of dying on an unhandled EPIPE.
 */
function quietOnClosedPipe(stream: NodeJS.WriteStream): void {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

export async function main(argv: string[]): Promise<void> {
  quietOnClosedPipe(process.stdout);
  quietOnClosedPipe(process.stderr);
  const { program, cli } = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
    cli().close();
  } catch (e) {
    cli().close();
    if (e instanceof CommanderError) {
      const ok = e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.exitCode === 0;
      process.exitCode = ok ? 0 : 2;
      // Commander already printed the message on stderr; --json also gets its one document.
      if (!ok && (program.opts().json || argv.includes('--json'))) {
        const message = e.code === 'commander.help' ? 'a subcommand is required' : e.message.replace(/^error: /, '');
        const err = new BangerError(ErrorCode.Usage, message, { hint: "see 'banger <command> --help'", details: { commanderCode: e.code } });
        process.stdout.write(JSON.stringify({ error: err.toJSON() }, null, 2) + '\n');
      }
      return;
    }
    reportError(e, program.opts());
    process.exitCode = process.exitCode && process.exitCode !== 0 ? process.exitCode : 1;
  }
}

export function reportError(e: unknown, opts: { json?: boolean; debug?: boolean }): void {
  const be = e instanceof BangerError ? e : new BangerError(ErrorCode.Internal, e instanceof Error ? e.message : String(e), { cause: e });
  if (opts.json) process.stdout.write(JSON.stringify({ error: be.toJSON() }, null, 2) + '\n');
  process.stderr.write(`error: ${be.message}\n`);
  if (be.hint) process.stderr.write(`hint: ${be.hint}\n`);
  if (opts.debug || be.code === ErrorCode.Internal) {
    const stack = (be.code === ErrorCode.Internal && e instanceof Error ? e : be).stack;
    if (opts.debug && stack) process.stderr.write(stack + '\n');
    else if (be.code === ErrorCode.Internal) process.stderr.write('(unexpected error: run with --debug for a stack trace)\n');
  }
}

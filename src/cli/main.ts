import { Command, CommanderError } from 'commander';
import { BangerError, ErrorCode } from '../core/errors.js';
import { Cli } from './context.js';
import { registerDaemonCommands } from './commands/daemon.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerSystemCommands } from './commands/system.js';
import { registerKernelCommands } from './commands/kernel.js';
import { registerImageCommands } from './commands/image.js';
import { registerVmCommands } from './commands/vm.js';
import { registerMcpCommand } from './commands/mcp.js';

export function buildProgram(): { program: Command; cli: () => Cli } {
  const program = new Command('banger');
  let instance: Cli | undefined;
  const cli = () => (instance ??= new Cli(program.opts()));
  program
    .description('A disposable Linux microVM in one command.\n\nQuick start:\n  banger kernel list --available\n  banger kernel pull debian-cloud-amd64\n  banger image pull docker.io/library/debian:bookworm\n  banger vm create --image debian-bookworm --name testbox --nat\n  banger vm ssh testbox -- uname -a')
    .version('0.1.0')
    .option('--json', 'print exactly one JSON document on stdout (logs and progress go to stderr)')
    .option('--debug', 'print stack traces for unexpected errors')
    .showSuggestionAfterError(true)
    .configureHelp({ sortSubcommands: false, showGlobalOptions: true })
    .addHelpText('after', '\nEnvironment: BANGER_ROOT (state dir), BANGER_SOCKET (daemon socket), BANGER_CONFIG (config file).\nRun \'banger <command> --help\' for details on a command.');
  // Before any subcommand exists: commander copies this setting into each subcommand as it is
  // created, so usage errors anywhere throw CommanderError (exit 2) instead of exiting with 1.
  program.exitOverride();
  registerKernelCommands(program, cli);
  registerImageCommands(program, cli);
  registerVmCommands(program, cli);
  registerDaemonCommands(program, cli);
  registerSystemCommands(program, cli);
  registerDoctorCommand(program, cli);
  registerMcpCommand(program);
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
  const { program, cli } = buildProgram();
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

import type { Command } from 'commander';
import type { Cli } from '../context.js';
import { printError } from '../print-error.js';
import { addCreateOptions, createParams, type CreateFlags } from './create-options.js';
import { runExec } from './exec.js';

interface RunOptions extends CreateFlags {
  rm?: boolean;
  interactive?: boolean;
  tty?: boolean;
  env?: string[];
  workdir?: string;
  user?: string;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/**
 * `banger run`: create a VM from IMAGE, wait for it, run CMD through the agent, stream it and
 * exit with its code. With --rm the VM is removed afterwards whatever happened (the command
 * failed, the agent broke, the user pressed Ctrl-C); a failed create is unwound by the daemon.
 */
export function registerRunCommand(program: Command, cli: () => Cli): void {
  const run = program
    .command('run')
    .description('create a VM from an image, run one command in it through the guest agent, and exit with its exit code')
    .argument('<image>', "image to boot (see 'banger image list')")
    .argument('<cmd...>', 'command and arguments (put them after --)')
    .option('--rm', 'remove the VM when the command ends (also on failure and Ctrl-C)')
    .option('-i, --interactive', 'forward stdin to the command')
    .option('-t, --tty', 'allocate a pty in the guest')
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable)', collect)
    .option('-w, --workdir <dir>', 'working directory in the guest')
    .option('-u, --user <user>', 'run as USER, UID or UID:GID (default: root)');
  // the `vm create` options (one definition, create-options.ts); run always starts and waits
  addCreateOptions(run, ['start', 'wait'])
    .addHelpText(
      'after',
      '\nExamples:\n  banger run --rm debian-bookworm -- uname -a\n  banger run --rm --nat debian-bookworm -- sh -c "apt-get update && apt-get install -y curl"\n  banger run -it --rm debian-bookworm -- bash\n  banger run --rm -p 8080:80 --mount ./site:/srv:ro debian-bookworm -- python3 -m http.server -d /srv 80\n  banger run --rm --vmm qemu --memory 2048 --init-script setup.sh debian-bookworm -- make test\n\nOptions from vm create apply to the VM run creates (see banger vm create --help).',
    )
    .action(async (image: string, cmd: string[], o: RunOptions) => {
      const c = cli();
      const vm = await c.call('vm.create', { image, ...(await createParams(o)) }, { progress: true });
      const name: string = vm.name;
      let code = 1;
      const keepAlive = () => {}; // Ctrl-C during cleanup must not kill the CLI before rm ran
      try {
        code = await runExec(c, name, cmd, o);
      } catch (e) {
        printError(e);
        code = 255;
      } finally {
        if (o.rm) {
          process.on('SIGINT', keepAlive);
          try {
            await c.call('vm.rm', { names: [name], force: true });
          } catch (e) {
            printError(e);
            process.stderr.write(`banger: vm '${name}' was not removed; remove it with: banger vm rm --force ${name}\n`);
          } finally {
            process.off('SIGINT', keepAlive);
          }
        }
      }
      process.exitCode = code;
      c.close();
    });
}

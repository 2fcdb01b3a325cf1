import type { Command } from 'commander';
import type { Cli } from '../context.js';
import type { Vm } from '../../rpc/types.js';

/** `banger vm pause` / `vm resume`: a VM's memory saved to disk and its VMM stopped, then restored. */
export function registerPauseCommands(vm: Command, cli: () => Cli): void {
  const line = (x: Vm) => `${x.name}: ${x.running ? 'running' : x.state}${x.paused ? ` (state ${mib(x.paused.bytes)} on disk)` : ''}`;
  vm.command('pause')
    .description("save VMs' memory and device state to disk and stop their VMM (memory freed; ports stay reserved)")
    .argument('<names...>', 'one or more VM names')
    .addHelpText(
      'after',
      '\nA paused VM is resumed by vm resume, vm start, or any vm exec / vm ssh / vm cp.\n\nExamples:\n  banger vm pause testbox\n  banger vm resume testbox',
    )
    .action(async (names: string[]) => {
      const c = cli();
      const r = await c.call('vm.pause', { names }, { progress: true });
      c.emit(r, (vs) => vs.map(line).join('\n'));
    });
  vm.command('resume')
    .description('restore paused VMs from their saved state')
    .argument('<names...>', 'one or more VM names')
    .addHelpText('after', '\nExamples:\n  banger vm resume testbox')
    .action(async (names: string[]) => {
      const c = cli();
      const r = await c.call('vm.resume', { names }, { progress: true });
      c.emit(r, (vs) => vs.map(line).join('\n'));
    });
}

function mib(n: number): string {
  return `${(n / 2 ** 20).toFixed(1)} MiB`;
}

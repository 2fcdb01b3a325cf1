import type { Command } from 'commander';
import type { Cli } from '../context.js';
import type { Vm } from '../../rpc/types.js';
import { BangerError, ErrorCode } from '../../core/errors.js';

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

/** `banger vm snapshot NAME [TAG]`, `vm snapshot ls NAME`, `vm snapshot rm NAME TAG`, `vm fork NAME NEW [--count N]`. */
export function registerSnapshotCommands(vm: Command, cli: () => Cli): void {
  vm.command('snapshot')
    .description("save a running VM's memory, device state and disk as a named snapshot (it runs on); 'ls NAME' and 'rm NAME TAG' manage them")
    .argument('<args...>', 'NAME [TAG] | ls NAME | rm NAME TAG')
    .addHelpText(
      'after',
      '\nExamples:\n  banger vm snapshot box before-upgrade\n  banger vm snapshot ls box\n  banger vm create --from box@before-upgrade --name box2\n  banger vm snapshot rm box before-upgrade',
    )
    .action(async (args: string[]) => {
      const c = cli();
      const [a, b, d] = args;
      if (a === 'ls' && b && !d) {
        const r = await c.call('vm.snapshots', { name: b });
        return c.emit(r, (xs) => xs.map((x) => `${x.vm}@${x.tag}  ${x.createdAt}  ${mib(x.bytes.allocated)} on disk`).join('\n') || `vm ${b} has no snapshots`);
      }
      if (a === 'rm' && b && d) {
        const r = await c.call('vm.snapshotRm', { name: b, tag: d });
        return c.emit(r, (x) => x.removed.map((n) => `removed ${n}`).join('\n'));
      }
      if (!a || d) throw new BangerError(ErrorCode.Usage, 'usage: banger vm snapshot NAME [TAG] | ls NAME | rm NAME TAG');
      const r = await c.call('vm.snapshot', { name: a, ...(b ? { tag: b } : {}) }, { progress: true });
      c.emit(r, (x) => `snapshot ${x.vm}@${x.tag}: ${mib(x.bytes.allocated)} on disk (banger vm create --from ${x.vm}@${x.tag})`);
    });
  vm.command('fork')
    .description("start new VMs from a running VM's state (it runs on): each with its own disk copy, network and identity")
    .argument('<name>', 'the VM to fork')
    .argument('<new>', 'name of the new VM (NEW-1 … NEW-N with --count N)')
    .option('--count <n>', 'how many VMs', (v) => Number(v))
    .addHelpText('after', '\nExamples:\n  banger vm fork box box2\n  banger vm fork box worker --count 4')
    .action(async (name: string, newName: string, o: { count?: number }) => {
      const c = cli();
      const r = await c.call('vm.fork', { name, newName, ...(o.count ? { count: o.count } : {}) }, { progress: true });
      c.emit(r, (vs) => vs.map((x) => `${x.name}: ${x.running ? 'running' : x.state} at ${x.ip}`).join('\n'));
    });
}

import type { Command } from 'commander';
import type { Cli } from '../context.js';

/** `banger vm …` (placeholder until the vm domain lands). */
export function registerVmCommands(program: Command, _cli: () => Cli): void {
  program.command('vm').description('manage vms');
}

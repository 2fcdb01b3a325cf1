import type { Command } from 'commander';
import type { Cli } from '../context.js';

/** `banger kernel …` (placeholder until the kernel domain lands). */
export function registerKernelCommands(program: Command, _cli: () => Cli): void {
  program.command('kernel').description('manage kernels');
}

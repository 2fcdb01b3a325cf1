import type { Command } from 'commander';
import type { Cli } from '../context.js';

/** `banger image …` (placeholder until the image domain lands). */
export function registerImageCommands(program: Command, _cli: () => Cli): void {
  program.command('image').description('manage images');
}

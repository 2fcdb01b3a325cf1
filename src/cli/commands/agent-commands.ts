import type { Command } from 'commander';
import type { Cli } from '../context.js';
import { registerCpCommand } from './cp.js';
import { registerExecCommand } from './exec.js';
import { registerRunCommand } from './run.js';

/** `banger vm exec`, `banger vm cp` and `banger run`: working inside a VM through its agent. */
export function registerAgentCommands(program: Command, vm: Command, cli: () => Cli): void {
  registerExecCommand(vm, cli);
  registerCpCommand(vm, cli);
  registerRunCommand(program, cli);
}

import type { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { checks, runChecks } from '../../doctor/checks.js';
import type { Cli } from '../context.js';

/** `banger doctor`: named host checks, each pass/warn/fail with a hint. */
export function registerDoctorCommand(program: Command, cli: () => Cli): void {
  program
    .command('doctor')
    .description(`check this host can run banger VMs (checks: ${checks.map((c) => c.name).join(', ')})`)
    .option('--skip <names>', 'comma-separated check names to skip', '')
    .action(async (o: { skip: string }) => {
      const c = cli();
      const skip = o.skip.split(',').map((s) => s.trim()).filter(Boolean);
      const unknown = skip.filter((s) => !checks.some((k) => k.name === s));
      if (unknown.length) throw new BangerError(ErrorCode.Invalid, `--skip: unknown check '${unknown[0]}'`, { hint: `checks are: ${checks.map((k) => k.name).join(', ')}` });
      const results = await runChecks(undefined, skip);
      const failed = results.filter((r) => r.status === 'fail').length;
      c.emit({ ok: failed === 0, checks: results }, (d) =>
        d.checks
          .map((r) => `${r.status === 'pass' ? 'PASS' : r.status === 'warn' ? 'WARN' : 'FAIL'}  ${r.name.padEnd(15)} ${r.detail}${r.hint ? `\n      hint: ${r.hint}` : ''}`)
          .join('\n') + `\n\n${failed ? `${failed} check(s) failed` : 'all required checks passed'}`,
      );
      if (failed) process.exitCode = 1;
    });
}

import type { Command } from 'commander';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { checks, runChecks } from '../../doctor/checks.js';
import type { Cli } from '../context.js';
import { layoutFromEnv } from '../../core/paths.js';
import { RpcClient } from '../../rpc/client.js';

/**
 * The daemon of this root, when one answers within a second: its pid, instance id (what its
 * taps, bridge, rules and VMMs are marked with) and state root. Never starts one, never fails.
 */
async function daemonInfo(socket: string): Promise<{ running: false } | { running: true; pid: number; instanceId: string; root: string }> {
  const client = await RpcClient.connect(socket, 1000).catch(() => undefined);
  if (!client) return { running: false };
  try {
    const st = await client.request('daemon.status', {});
    return { running: true, pid: st.pid, instanceId: st.instanceId, root: st.root };
  } catch {
    return { running: false };
  } finally {
    client.close();
  }
}

/** `banger doctor`: named host checks, each pass/warn/fail with a hint. */
export function registerDoctorCommand(program: Command, cli: () => Cli): void {
  program
    .command('doctor')
    .description(`check this host can run banger VMs (checks: ${checks.map((c) => c.name).join(', ')})`)
    .option('--skip <names>', 'comma-separated check names to skip', '')
    .action(async (o: { skip: string }) => {
      const c = cli();
      const skip = o.skip
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
      const unknown = skip.filter((s) => !checks.some((k) => k.name === s));
      if (unknown.length)
        throw new BangerError(ErrorCode.Invalid, `--skip: unknown check '${unknown[0]}'`, { hint: `checks are: ${checks.map((k) => k.name).join(', ')}` });
      const results = await runChecks(undefined, skip);
      const failed = results.filter((r) => r.status === 'fail').length;
      const daemon = await daemonInfo(layoutFromEnv(c.env).socket);
      c.emit(
        { ok: failed === 0, checks: results, daemon },
        (d) =>
          d.checks
            .map(
              (r) =>
                `${r.status === 'pass' ? 'PASS' : r.status === 'warn' ? 'WARN' : 'FAIL'}  ${r.name.padEnd(15)} ${r.detail}${r.hint ? `\n      hint: ${r.hint}` : ''}`,
            )
            .join('\n') +
          `\n\n${d.daemon.running ? `bangerd: pid ${d.daemon.pid}, instance ${d.daemon.instanceId}, root ${d.daemon.root}` : 'bangerd: not running'}` +
          `\n${failed ? `${failed} check(s) failed` : 'all required checks passed'}`,
      );
      if (failed) process.exitCode = 1;
    });
}

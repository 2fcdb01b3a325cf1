import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { layoutFromEnv } from '../../core/paths.js';
import { RpcClient } from '../../rpc/client.js';
import { startDaemonProcess, waitForDaemon, type Cli } from '../context.js';

/** `banger daemon start|stop|status`. */
export function registerDaemonCommands(program: Command, cli: () => Cli): void {
  const daemon = program.command('daemon').description('start, stop and inspect bangerd, the privileged daemon');

  daemon
    .command('start')
    .description('start bangerd in the background (needs root)')
    .action(async () => {
      const c = cli();
      const lay = layoutFromEnv(c.env);
      const running = await RpcClient.connect(lay.socket, 1000).catch(rethrowPermission);
      if (running) {
        const st = await running.request('daemon.status', {});
        running.close();
        return c.emit({ started: false, alreadyRunning: true, ...st }, (s) => `bangerd already running (pid ${s.pid}, socket ${s.socket})`);
      }
      if (process.getuid?.() !== 0) throw new BangerError(ErrorCode.Permission, 'bangerd must run as root', { hint: 'run: sudo banger daemon start' });
      const started = await startDaemonProcess(c.env);
      const client = await waitForDaemon(lay.socket, 15000, started);
      const st = await client.request('daemon.status', {});
      client.close();
      c.emit({ started: true, ...st }, (s) => `bangerd started (pid ${s.pid}, socket ${s.socket}, log ${s.logFile})`);
    });

  daemon
    .command('stop')
    .description('stop bangerd (running VMs keep running and are re-adopted on next start)')
    .action(async () => {
      const c = cli();
      const lay = layoutFromEnv(c.env);
      const client = await RpcClient.connect(lay.socket, 1000).catch(rethrowPermission);
      if (!client) return c.emit({ stopped: false, running: false }, () => 'bangerd is not running');
      const st = await client.request('daemon.status', {});
      await client.request('daemon.shutdown', {});
      client.close();
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline && isAlive(st.pid)) await new Promise((r) => setTimeout(r, 50));
      c.emit({ stopped: true, pid: st.pid }, () => `bangerd stopped (pid ${st.pid})`);
    });

  daemon
    .command('status')
    .description('show whether bangerd runs, its pid, socket, state root and log file')
    .action(async () => {
      const c = cli();
      const lay = layoutFromEnv(c.env);
      const client = await RpcClient.connect(lay.socket, 1000).catch((e) => {
        if (e instanceof BangerError && e.code === ErrorCode.Permission) throw e;
        return e as Error;
      });
      if (client instanceof Error) {
        const pid = await readFile(lay.pidFile, 'utf8')
          .then((s) => Number(s.trim()))
          .catch(() => undefined);
        c.emit(
          { running: false, socket: lay.socket, stalePid: pid, reason: client.message },
          () => `bangerd is not running (${client.message})\nstart it with: sudo banger daemon start`,
        );
        process.exitCode = 3;
        return;
      }
      const st = await client.request('daemon.status', {});
      client.close();
      c.emit({ running: true, ...st }, (s) =>
        [
          `bangerd ${s.version} running`,
          `  pid:     ${s.pid}`,
          `  uptime:  ${s.uptimeSeconds}s`,
          `  socket:  ${s.socket}`,
          `  root:    ${s.root}`,
          `  instance: ${s.instanceId}`,
          `  config:  ${s.configFile}`,
          `  log:     ${s.logFile}`,
          `  schema:  v${s.schemaVersion}`,
          ...(s.node ? [`  node:    ${s.node.path} ${s.node.version}`] : []),
        ].join('\n'),
      );
    });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A daemon we may not talk to is not "not running": surface the permission error. */
function rethrowPermission(e: unknown): undefined {
  if (e instanceof BangerError && e.code === ErrorCode.Permission) throw e;
  return undefined;
}

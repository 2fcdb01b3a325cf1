import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { installRoot } from '../../core/installroot.js';
import { exec } from '../../core/exec.js';
import { humanSize } from '../../core/fsutil.js';
import { systemInstall } from '../install.js';
import type { Cli } from '../context.js';
import type { TeardownResult } from '../../rpc/types.js';

/** `banger system install`. */
export function registerSystemCommands(program: Command, cli: () => Cli): void {
  const system = program.command('system').description('install banger on this host, free unused storage');
  system
    .command('prune')
    .description('free content-store blobs (layers, kernel bundles, Debian packages) that no image, kernel or cache entry references')
    .addHelpText('after', '\nExample:\n  banger system prune')
    .action(async () => {
      const c = cli();
      c.emit(
        await c.call('system.prune', {}),
        (r) => `removed ${r.removed} blob(s)${r.preparedRemoved ? ` and ${r.preparedRemoved} stale prepared disk(s)` : ''}, freed ${humanSize(r.freedBytes)}`,
      );
    });
  system
    .command('teardown')
    .description(
      "stop every running VM and remove banger's taps, NAT rules and bridge (VM records and disks stay); the package's prerm runs it on remove and purge",
    )
    .addHelpText('after', '\nExample:\n  sudo banger system teardown && sudo banger daemon stop')
    .action(async () => {
      const c = cli();
      const result = await c.call('daemon.teardown', {});
      if (result.failed.length) process.exitCode = 1;
      c.emit(result, (r: TeardownResult) =>
        [
          `stopped ${r.stopped.length} VM(s)${r.stopped.length ? `: ${r.stopped.join(', ')}` : ''}`,
          ...(r.failed.length ? [`could not stop: ${r.failed.join(', ')}`] : []),
          `removed ${r.taps.length} tap(s), NAT rules of ${r.natVms.length} VM(s)${r.natTable ? ', the nft table' : ''}${r.policyTable ? ', the egress-policy table' : ''}${r.bridge ? ', the bridge' : ''}`,
        ].join('\n'),
      );
    });
  system
    .command('install')
    .description('write a systemd unit for bangerd and create the banger group (members may use the CLI without sudo)')
    .option('--root <dir>', 'install into this directory instead of / (for packaging and tests)', '/')
    .option('--no-start', 'write the unit but do not enable and start it')
    .action(async (o: { root: string; start: boolean }) => {
      const c = cli();
      const destRoot = resolve(o.root);
      if (destRoot === '/' && process.getuid?.() !== 0)
        throw new BangerError(ErrorCode.Permission, 'system install needs root', { hint: 'run: sudo banger system install' });
      const bangerdPath = join(installRoot(import.meta.url), 'bin', 'bangerd');
      const r = await systemInstall({ destRoot, bangerdPath, nodePath: process.execPath, exec, activate: destRoot === '/' && o.start });
      c.emit(r, (x) =>
        [
          `wrote ${x.unitPath}`,
          `group ${x.group.name} (gid ${x.group.gid})${x.group.created ? ' created' : ' exists'}`,
          x.activated ? 'bangerd enabled and started' : 'not started (start it with: systemctl enable --now bangerd)',
          'add users to the group: sudo usermod -aG banger $USER',
        ].join('\n'),
      );
    });
}

import { collect } from './vm-create-extras.js';
import { spawn } from 'node:child_process';
import { lstat, mkdir, readFile, readlink, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { Option, type Command } from 'commander';
import { writeFileAtomic } from '../../core/fsutil.js';
import type { Cli } from '../context.js';
import type { Params } from '../../rpc/contract.js';
import type { Vm, VmDetail } from '../../rpc/types.js';
import { age, table } from '../table.js';
import { formatPort } from './vm-create-extras.js';
import { formatRemaining } from '../../core/duration.js';
import { addCreateOptions, createParams, durationArg } from './create-options.js';
import { registerAgentCommands } from './agent-commands.js';
import { resumedLine } from '../stream-client.js';
import { registerPauseCommands, registerSnapshotCommands } from './vm-pause.js';

/** `banger vm …`, `banger ps` and `banger ssh-config`. Handlers return data; `emit` prints. */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: a flat list of commander definitions, one short block per subcommand; splitting it would scatter the command group
export function registerVmCommands(program: Command, cli: () => Cli): void {
  const vm = program
    .command('vm')
    .description('create, run, inspect and remove microVMs')
    .addHelpText(
      'after',
      '\nExamples:\n  banger vm create --image debian-bookworm --name testbox --nat\n  banger vm ssh testbox -- uname -a\n  banger ps\n  banger vm rm testbox',
    );

  addCreateOptions(
    vm
      .command('create')
      .description('create a VM from an image and boot it (waits until SSH answers unless --no-wait)')
      .option('--image <image>', "image to boot (see 'banger image list'); required unless --from")
      .option('--from <vm[@tag]>', "start from a VM's named snapshot (its newest when no tag) instead of booting (banger vm snapshot)"),
  )
    .addHelpText(
      'after',
      "\nStages are shown with elapsed time: disk, seed, network, vmm, boot, first-boot, ssh, agent.\n\nFirst boot: an image without systemd or an SSH server (e.g. docker.io/library/debian) gets them\ninstalled by its own package manager on its first boot (needs --nat, or a mirror/proxy the VM\nreaches). --package-mirror points that install at another archive (an air-gapped mirror, a\nlocal subset); --package-proxy sends it through an HTTP proxy. The guest's own sources are\nrestored after the install; later boots install nothing. vm show says which was used.\n\nExamples:\n  banger vm create --image debian-bookworm --name testbox --nat\n  banger vm create --image debian-bookworm --vcpu 4 --memory 2048 --disk-size 8G\n  banger vm create --image debian-bookworm --no-wait --vmm qemu\n  banger vm create --image debian --nat --package-mirror http://10.0.0.1:8080/debian\n  banger vm create --image alpine --nat --package-proxy http://10.0.0.1:3128\n  banger vm create --image debian-bookworm -p 8080:80 --mount ./site:/srv/site:ro --init-script setup.sh\n  banger --json vm create --image debian-bookworm",
    )
    .action(async (o) => {
      const c = cli();
      if (!o.image && !o.from) throw new BangerError(ErrorCode.Usage, "required option '--image <image>' not specified (or --from VM[@TAG])");
      const v = await c.call(
        'vm.create',
        { ...(o.image ? { image: o.image } : {}), ...(o.from ? { from: o.from } : {}), ...(await createParams(o)) },
        { progress: true },
      );
      c.emit(
        v,
        (x) =>
          `vm ${x.name} ${x.running ? 'running' : x.state} at ${x.ip} (${x.vmm}: ${x.vmmReason})${x.running ? `\nconnect: banger vm ssh ${x.name}   or   ssh ${x.name}.vm (after 'banger ssh-config --install')` : ''}`,
      );
    });

  for (const [verb, desc] of [
    ['start', 'start stopped VMs and wait until SSH answers'],
    ['stop', 'shut VMs down gracefully (guest reboot with -no-reboot, then QMP quit, then SIGKILL after vm.stopTimeoutSeconds)'],
    ['restart', 'stop then start VMs (disk contents are kept)'],
  ] as const) {
    const cmd = vm
      .command(verb)
      .description(desc)
      .argument('<names...>', 'one or more VM names')
      .addHelpText('after', `\nExamples:\n  banger vm ${verb} testbox\n  banger vm ${verb} web1 web2`);
    if (verb === 'start') cmd.option('--no-wait', 'return once the VMM runs, without waiting for SSH');
    cmd.action(async (names: string[], o: { wait?: boolean }) => {
      const c = cli();
      const r =
        verb === 'start' && o.wait === false
          ? await c.call('vm.start', { names, wait: false }, { progress: true })
          : await c.call(`vm.${verb}`, { names }, { progress: true });
      c.emit(r, (vs) => vs.map((x) => `${x.name}: ${x.running ? 'running' : x.state}`).join('\n'));
    });
  }

  vm.command('kill')
    .description('send a signal to the VMM process (default SIGKILL: immediate stop, network torn down)')
    .argument('<names...>', 'one or more VM names')
    .option('--signal <sig>', 'signal to send, e.g. SIGKILL, SIGTERM', 'SIGKILL')
    .addHelpText('after', '\nExamples:\n  banger vm kill testbox\n  banger vm kill --signal SIGTERM testbox')
    .action(async (names: string[], o) => {
      const c = cli();
      const sig = String(o.signal).toUpperCase().startsWith('SIG') ? String(o.signal).toUpperCase() : `SIG${String(o.signal).toUpperCase()}`;
      // The daemon validates the signal name against the contract (E_INVALID naming the field).
      const r = await c.call('vm.kill', { names, signal: sig as Params<'vm.kill'>['signal'] });
      c.emit(r, (vs) => vs.map((x) => `${x.name}: ${x.running ? 'running' : x.state}`).join('\n'));
    });

  vm.command('rm')
    .aliases(['delete', 'remove'])
    .description('remove VMs: stop (or with -f kill) them, then delete disks, keys, lease, tap and NAT rules')
    .argument('<names...>', 'one or more VM names')
    .option('-f, --force', 'kill a running VM instead of shutting it down gracefully')
    .addHelpText('after', '\nExamples:\n  banger vm rm testbox\n  banger vm rm -f web1 web2')
    .action(async (names: string[], o) => {
      const c = cli();
      const r = await c.call('vm.rm', { names, force: !!o.force }, { progress: true });
      c.emit(r, (x) => x.removed.map((n: string) => `removed ${n}`).join('\n'));
    });

  vm.command('prune')
    .description('remove every VM that is not running')
    .addHelpText('after', '\nExamples:\n  banger vm prune\n  banger --json vm prune')
    .action(async () => {
      const c = cli();
      const r = await c.call('vm.prune', {}, { progress: true });
      c.emit(r, (x) => (x.removed.length ? x.removed.map((n: string) => `removed ${n}`).join('\n') : 'nothing to prune'));
    });

  vm.command('extend')
    .description("push a VM's lifetime out by DURATION (from its deadline, or from now when it has none or it passed)")
    .argument('<name>', 'VM name')
    .argument('<duration>', 'e.g. 30m, 2h, 1d', durationArg('DURATION'))
    .addOption(new Option('--on-expire <action>', 'also change what the deadline does: stop or rm').choices(['stop', 'rm']))
    .addHelpText('after', '\nExamples:\n  banger vm extend testbox 1h\n  banger vm extend testbox 30m --on-expire rm')
    .action(async (name: string, by: string, o: { onExpire?: 'stop' | 'rm' }) => {
      const c = cli();
      const v = await c.call('vm.extend', { name, by, ...(o.onExpire ? { onExpire: o.onExpire } : {}) });
      c.emit(v, (x) => `vm ${x.name} expires at ${x.expiresAt} (in ${formatRemaining(Date.parse(x.expiresAt ?? '') - Date.now())}, then ${x.onExpire})`);
    });

  vm.command('update')
    .description("change a VM's egress policy; a running VM's rules change at once, in one transaction (docs/network-policy.md)")
    .argument('<name>', 'VM name')
    .addOption(new Option('--egress <mode>', 'deny (also clears the allow list), nat (no policy) or allow').choices(['deny', 'nat', 'allow']))
    .addOption(
      new Option('--allow <dest>', 'add a destination, CIDR[:PORT[/PROTO]] or HOSTNAME[:PORT] (a deny VM becomes allow; repeatable)')
        .argParser(collect)
        .default([]),
    )
    .addOption(new Option('--deny <dest>', 'take a destination out of the allow list (repeatable)').argParser(collect).default([]))
    .addOption(new Option('--allow-vm <name>', 'let this VM and VM NAME reach each other (repeatable)').argParser(collect).default([]))
    .addOption(new Option('--deny-vm <name>', 'take back an --allow-vm (repeatable)').argParser(collect).default([]))
    .addHelpText(
      'after',
      '\nExamples:\n  banger vm update sandbox --allow 192.0.2.7:443\n  banger vm update sandbox --deny 192.0.2.7:443\n  banger vm update sandbox --egress deny',
    )
    .action(async (name: string, o: { egress?: 'deny' | 'nat' | 'allow'; allow: string[]; deny: string[]; allowVm: string[]; denyVm: string[] }) => {
      const c = cli();
      const p = {
        name,
        ...(o.egress ? { egress: o.egress } : {}),
        ...(o.allow.length ? { allow: o.allow } : {}),
        ...(o.deny.length ? { deny: o.deny } : {}),
        ...(o.allowVm.length ? { allowVm: o.allowVm } : {}),
        ...(o.denyVm.length ? { denyVm: o.denyVm } : {}),
      };
      const v = await c.call('vm.update', p);
      c.emit(v, (x) => {
        const allowed = [...(x.spec.allow ?? []), ...(x.spec.allowVm ?? []).map((n: string) => `vm ${n}`)];
        return `vm ${x.name}: egress ${x.spec.egress ?? 'none'}${allowed.length ? `, allow ${allowed.join(', ')}` : ''}`;
      });
    });

  const listAction = async () => {
    const c = cli();
    const vms = await c.call('vm.list', {});
    c.emit(vms, renderList);
  };
  vm.command('list')
    .alias('ls')
    .description('list VMs: NAME STATE VMM IMAGE IP VCPU MEM AGE TTL PORTS (alias: banger ps)')
    .addHelpText('after', '\nExamples:\n  banger vm list\n  banger ps\n  banger --json vm list')
    .action(listAction);
  program
    .command('ps')
    .description('list VMs (same as banger vm list)')
    .addHelpText('after', '\nExamples:\n  banger ps\n  banger --json ps')
    .action(listAction);

  vm.command('show')
    .description('show one VM: state, VMM and why it was chosen, IP, disks, files')
    .argument('<name>', 'VM name')
    .addHelpText('after', '\nExamples:\n  banger vm show testbox\n  banger --json vm show testbox')
    .action(async (name: string) => {
      const c = cli();
      const v = await c.call('vm.show', { name });
      c.emit(v, renderShow);
    });

  vm.command('logs')
    .description("print the VM's serial console (kernel and boot messages)")
    .argument('<name>', 'VM name')
    .option('-f, --follow', 'keep printing new output until the VM stops (Ctrl-C to quit)')
    .addHelpText('after', '\nExamples:\n  banger vm logs testbox\n  banger vm logs -f testbox')
    .action(async (name: string, o) => {
      const c = cli();
      let offset = 0;
      let all = '';
      let until: number | undefined; // without -f: what the console held at the first answer
      // -f ends on Ctrl-C as a shell expects of a follower: exit 130, whether a request or the
      // pause between two was running (the call's own handler would only cancel the request).
      if (o.follow) process.once('SIGINT', () => process.exit(130));
      for (;;) {
        const r = await c.call('vm.logs', { name, offset });
        offset = r.offset;
        until ??= r.end;
        if (c.json) all += r.data;
        else process.stdout.write(r.data);
        if (!o.follow && (offset >= until || !r.data)) break;
        if (o.follow && !r.running && !r.data) break;
        if (!r.data) await new Promise((res) => setTimeout(res, 500));
      }
      if (c.json) c.emit({ name, console: all }, () => '');
    });

  vm.command('ssh')
    .description('open an SSH session to the VM as root (pinned host key), or run CMD and exit with its exit code')
    .argument('<name>', 'VM name')
    .argument('[cmd...]', 'command to run (put it after --)')
    .addHelpText(
      'after',
      '\nExamples:\n  banger vm ssh testbox\n  banger vm ssh testbox -- uname -a\n  banger vm ssh testbox -- "id; systemctl is-system-running"',
    )
    .action(async (name: string, cmd: string[]) => {
      const c = cli();
      const info = await c.call('vm.sshInfo', { name });
      c.close();
      resumedLine(name, info.resumedMs);
      // root uses the 0600 key; banger-group users the 0640 root:banger copy.
      const key = process.getuid?.() === 0 || !info.groupIdentityFile ? info.identityFile : info.groupIdentityFile;
      const argv = ['-i', key, ...info.options, ...(cmd.length ? [] : ['-t']), `${info.user}@${info.ip}`, ...cmd];
      process.exitCode = await new Promise<number>((resolve) => {
        const child = spawn('ssh', argv, { stdio: 'inherit' });
        child.on('error', () => resolve(255));
        child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 + 1 : 255)));
      });
    });

  registerAgentCommands(program, vm, cli);
  registerPauseCommands(vm, cli);
  registerSnapshotCommands(vm, cli);

  vm.command('ports')
    .description('list listening ports inside the VM (asks the guest agent)')
    .argument('<name>', 'VM name')
    .addHelpText('after', '\nExamples:\n  banger vm ports testbox\n  banger --json vm ports testbox')
    .action(async (name: string) => {
      const c = cli();
      const r = await c.call('vm.ports', { name });
      c.emit(r, (x) =>
        table(
          ['PROTO', 'ADDRESS', 'PORT'],
          x.ports.map((p) => [p.proto, p.address, p.port]),
        ),
      );
    });

  program
    .command('ssh-config')
    .description("write banger's ssh_config fragment (Host NAME.vm per VM); --install includes it from ~/.ssh/config")
    .option('--install', 'add "Include <fragment>" at the top of ~/.ssh/config (idempotent)')
    .addHelpText(
      'after',
      '\nAfterwards plain ssh (and editors using it) work:\n  ssh testbox.vm\n\nExamples:\n  banger ssh-config\n  banger ssh-config --install',
    )
    .action(async (o) => {
      const c = cli();
      const r = await c.call('vm.sshConfig', {});
      let installed: string | undefined;
      if (o.install) installed = await installInclude(r.path);
      c.emit({ ...r, installed }, (x) => (installed ? `Include ${x.path} is in ${installed}` : x.content));
    });
}

/**
 * Prepend `Include PATH` to ~/.ssh/config unless it is already there. Returns the file written.
 * A symlinked ~/.ssh/config (dotfile managers) stays a symlink: the new text is written
 * atomically beside its target, which keeps its mode.
 */
export async function installInclude(path: string, home = homedir()): Promise<string> {
  const dir = join(home, '.ssh');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = await symlinkTarget(join(dir, 'config'));
  const text = await readFile(file, 'utf8').catch(() => '');
  const line = `Include ${path}`;
  if (text.split('\n').some((l) => l.trim() === line)) return file;
  const mode = (await stat(file).catch(() => undefined))?.mode;
  // At the top: an Include after a Host block would only apply to that block.
  await writeFileAtomic(file, `${line}\n${text.startsWith('\n') || !text ? '' : '\n'}${text}`, mode === undefined ? 0o600 : mode & 0o777);
  return file;
}

/** The file a chain of symlinks at `p` ends in (which may not exist yet), or `p` itself. */
async function symlinkTarget(p: string): Promise<string> {
  for (let i = 0; i < 40; i++) {
    const st = await lstat(p).catch(() => undefined);
    if (!st?.isSymbolicLink()) return p;
    p = resolve(dirname(p), await readlink(p));
  }
  throw new BangerError(ErrorCode.Invalid, `too many levels of symlinks at ${p}`);
}

/** The fields the VM table shows. */
export type VmRow = Pick<Vm, 'name' | 'running' | 'state' | 'vmm' | 'image' | 'ip' | 'createdAt'> &
  Partial<Pick<Vm, 'expiresAt' | 'onExpire'>> & { spec: Pick<Vm['spec'], 'vcpu' | 'memoryMiB' | 'ports'> };

/** The TTL column: time left and what happens then (`9m12s rm`), `-` without a lifetime. */
export function ttlCell(v: Partial<Pick<Vm, 'expiresAt' | 'onExpire'>>, now = Date.now()): string {
  return v.expiresAt ? `${formatRemaining(Date.parse(v.expiresAt) - now)} ${v.onExpire ?? 'stop'}` : '-';
}

export function renderList(vms: VmRow[], now = Date.now()): string {
  if (!vms.length) return 'no VMs (create one: banger vm create --image IMAGE)';
  return table(
    ['NAME', 'STATE', 'VMM', 'IMAGE', 'IP', 'VCPU', 'MEM', 'AGE', 'TTL', 'PORTS'],
    vms.map((v) => [
      v.name,
      v.running ? 'running' : v.state,
      v.vmm,
      v.image,
      v.ip,
      v.spec.vcpu,
      `${v.spec.memoryMiB}M`,
      age(v.createdAt),
      ttlCell(v, now),
      (v.spec.ports ?? []).map(formatPort).join(', '),
    ]),
  );
}

function renderShow(v: VmDetail): string {
  const rows: [string, unknown][] = [
    ['name', v.name],
    ['id', v.id],
    ['state', v.running ? `running (pid ${v.pid})` : v.state],
    ['vmm', `${v.vmm}: ${v.vmmReason}`],
    ['image', v.image],
    ['kernel', v.kernel],
    ['ip', v.ip],
    ['mac', v.mac],
    ['tap', v.tap],
    ['vcpu', v.spec.vcpu],
    ['memory', `${v.spec.memoryMiB} MiB`],
    ['nat', v.spec.nat ? 'yes' : 'no'],
    ['egress', v.spec.egress ?? 'none (no policy)'],
    ['allow', [...(v.spec.allow ?? []), ...(v.spec.allowVm ?? []).map((n: string) => `vm ${n}`)].join(', ') || undefined],
    ['limits', limitsCell(v.spec.limits)],
    ['usage', usageCell(v.cgroup)],
    ['ports', v.spec.ports?.length ? v.spec.ports.map(formatPort).join(', ') + portLimits(v.spec.portLimits) : undefined],
    [
      'mounts',
      (v.spec.mounts ?? [])
        .map((m: { hostDir: string; guestDir: string; readOnly: boolean }) => `${m.hostDir} -> ${m.guestDir}${m.readOnly ? ' (ro)' : ''}`)
        .join(', ') || undefined,
    ],
    ['root disk', `${v.spec.rootDisk.path} (${v.spec.rootDisk.format}${v.rootDiskMethod ? `, ${v.rootDiskMethod} copy` : ''})`],
    ['init', v.cmdlineFirstBoot ?? '(image default)'],
    [
      'packages',
      v.spec.firstBoot
        ? `first boot installs from ${v.spec.packageMirror ?? "the image's own sources"}${v.spec.packageProxy ? ` via proxy ${v.spec.packageProxy}` : ''}`
        : undefined,
    ],
    ['console', v.console],
    ['created', `${v.createdAt} (${age(v.createdAt)} ago)`],
    ['expires', v.expiresAt ? `${v.expiresAt} (${ttlCell(v)})` : undefined],
    ['ssh', v.sshCommand],
  ];
  return rows.map(([k, val]) => `${(k + ':').padEnd(11)} ${val ?? '-'}`).join('\n');
}

const MiB = (b: number) => `${Math.round(b / 1048576)} MiB`;

/** `memory 1280 MiB, pids 1024, cpu 0.5, disk 100 iops` (what the VM was created with), or undefined. */
function limitsCell(l: VmDetail['spec']['limits']): string | undefined {
  if (!l) return undefined;
  const parts = [
    l.memoryMaxMiB !== undefined ? `memory ${l.memoryMaxMiB} MiB` : undefined,
    l.pidsMax !== undefined ? `pids ${l.pidsMax}` : undefined,
    l.cpuQuota !== undefined ? `cpu ${l.cpuQuota}` : undefined,
    l.diskIops !== undefined ? `disk ${l.diskIops} iops` : undefined,
    l.diskBps !== undefined ? `disk ${l.diskBps} B/s` : undefined,
  ];
  return parts.filter(Boolean).join(', ');
}

/** The running VMM's cgroup as the kernel reports it: memory used/max, pids, CPU time. */
function usageCell(c: VmDetail['cgroup']): string | undefined {
  if (!c) return undefined;
  const cpu = c.cpuUsageUsec !== undefined ? `, cpu ${(c.cpuUsageUsec / 1e6).toFixed(1)} s` : '';
  return `memory ${MiB(c.memoryCurrentBytes)} of ${c.memoryMaxBytes === null ? 'unlimited' : MiB(c.memoryMaxBytes)}, pids ${c.pidsCurrent} of ${c.pidsMax ?? 'max'}${cpu} (cgroup v${c.version} ${c.dirs[0]})`;
}

/** ` (at most 256 clients at once each, idle ones closed after 600 s)`, or '' for a VM made before port limits. */
function portLimits(l: Vm['spec']['portLimits']): string {
  if (!l) return '';
  return ` (at most ${l.maxConnections} clients at once each, idle ones closed ${l.idleTimeoutSeconds ? `after ${l.idleTimeoutSeconds} s` : 'never'})`;
}

import { type Command, InvalidArgumentError, Option } from 'commander';
import { durationProblem } from '../../core/duration.js';
import { VMM_CHOICES } from '../../core/vmm.js';
import type { Params } from '../../rpc/contract.js';
import { collect, createExtras } from './vm-create-extras.js';

/**
 * The `vm create` options, defined once and shared by `banger vm create` and `banger run`
 * (which creates a VM the same way before running its command). `--image` is not here: it is
 * an option of `vm create` and the IMAGE argument of `run`.
 */

/** The `vm.create` params the shared options fill (`--image` / IMAGE is the command's own). */
type CreateParamsWire = Omit<Params<'vm.create'>, 'image'>;

/**
 * What commander yields for the shared options (`--no-start` / `--no-wait` give start/wait
 * false), derived from the contract's `vm.create` params: a flag named as its param carries the
 * param's type; those whose flag differs are renamed here (and `--init-script` is a path,
 * read and sent base64 by createExtras).
 */
export type CreateFlags = Omit<CreateParamsWire, 'memoryMiB' | 'ports' | 'mounts' | 'initScript' | 'portMaxConnections' | 'portIdleTimeoutSeconds'> & {
  memory?: CreateParamsWire['memoryMiB'];
  portMaxConns?: CreateParamsWire['portMaxConnections'];
  portIdleTimeout?: CreateParamsWire['portIdleTimeoutSeconds'];
  publish?: CreateParamsWire['ports'];
  mount?: CreateParamsWire['mounts'];
  /** The script's path (the param is its bytes, base64). */
  initScript?: string;
};

/** Options a command may leave out: `run` always starts the VM and waits for it. */
export type OmittableCreateOption = 'start' | 'wait';

function intArg(flag: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${flag} must be a whole number, got '${v}'`);
    return Number(v);
  };
}

function numArg(flag: string) {
  return (v: string) => {
    if (!/^\d+(\.\d+)?$/.test(v)) throw new InvalidArgumentError(`${flag} must be a number such as 0.5 or 2, got '${v}'`);
    return Number(v);
  };
}

/** A duration flag (`--ttl 2h`): checked here, so a typo fails before anything is sent. */
export function durationArg(flag: string) {
  return (v: string) => {
    const problem = durationProblem(v);
    if (problem) throw new InvalidArgumentError(`${flag}: ${problem}`);
    return v;
  };
}

/** Every shared option, in the order `--help` lists them; `key` is its CreateFlags field. */
const CREATE_OPTIONS: Array<{ key: keyof CreateFlags; make: () => Option }> = [
  { key: 'name', make: () => new Option('--name <name>', 'VM name (default: a generated one such as brave-otter-42)') },
  { key: 'kernel', make: () => new Option('--kernel <kernel>', "kernel to boot (default: the image's kernel ref, else the configured default kernel)") },
  { key: 'vcpu', make: () => new Option('--vcpu <n>', 'virtual CPUs (default: config vm.vcpu, 2)').argParser(intArg('--vcpu')) },
  { key: 'memory', make: () => new Option('--memory <MiB>', 'memory in MiB (default: config vm.memoryMiB, 1024)').argParser(intArg('--memory')) },
  {
    key: 'diskSize',
    make: () => new Option('--disk-size <size>', 'root disk size (e.g. 8G, at least the image size); the first boot grows the ext4 root to fill it'),
  },
  { key: 'workDisk', make: () => new Option('--work-disk <size>', 'attach an empty ext4 work disk of SIZE as /dev/vdc (label banger-work)') },
  { key: 'nat', make: () => new Option('--nat', 'give the VM outbound network access through NAT (masquerade on the host); the same as --egress nat') },
  {
    key: 'egress',
    make: () =>
      new Option(
        '--egress <mode>',
        'egress policy: deny (nothing but what banger serves the VM), nat (everything, = --nat), allow (only the --allow destinations); deny/allow also cut the VM off other VMs and the host (default: config vm.egress, none)',
      ).choices(['deny', 'nat', 'allow']),
  },
  {
    key: 'allow',
    make: () =>
      new Option('--allow <dest>', 'a destination the VM may reach through NAT, CIDR[:PORT[/PROTO]] or HOSTNAME[:PORT] (implies --egress allow; repeatable)')
        .argParser(collect)
        .default([]),
  },
  {
    key: 'allowVm',
    make: () =>
      new Option('--allow-vm <name>', 'let this VM and VM NAME reach each other although it has a policy (repeatable)').argParser(collect).default([]),
  },
  { key: 'start', make: () => new Option('--no-start', 'only create the VM (disks, keys, lease); start it later with vm start') },
  { key: 'wait', make: () => new Option('--no-wait', 'return once the VMM runs, without waiting for SSH') },
  { key: 'cold', make: () => new Option('--cold', 'boot even when a warm snapshot of the image fits this shape (banger image warm)') },
  { key: 'vmm', make: () => new Option('--vmm <vmm>', 'VMM: auto picks firecracker when usable, else qemu').choices([...VMM_CHOICES]) },
  {
    key: 'packageMirror',
    make: () =>
      new Option(
        '--package-mirror <url>',
        "archive the first boot installs systemd + sshd from instead of the image's own sources (Debian/Ubuntu: the base URL, e.g. http://10.0.0.1:8080/debian; default: config firstBoot.packageMirror)",
      ),
  },
  { key: 'packageProxy', make: () => new Option('--package-proxy <url>', 'HTTP proxy for the first boot install (default: config firstBoot.packageProxy)') },
  {
    key: 'publish',
    make: () =>
      new Option('-p, --publish <spec>', 'publish a guest TCP port on the host: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp], HOSTIP default 127.0.0.1 (repeatable)')
        .argParser(collect)
        .default([]),
  },
  {
    key: 'portMaxConns',
    make: () =>
      new Option(
        '--port-max-conns <n>',
        'clients each published port accepts at once; past it a new connection is closed at once (default: config ports.maxConnections, 256)',
      ).argParser(intArg('--port-max-conns')),
  },
  {
    key: 'portIdleTimeout',
    make: () =>
      new Option(
        '--port-idle-timeout <seconds>',
        'close a connection to a published port (both sides) after SECONDS without traffic, 0 never (default: config ports.idleTimeoutSeconds, 600)',
      ).argParser(intArg('--port-idle-timeout')),
  },
  {
    key: 'mount',
    make: () =>
      new Option('--mount <spec>', 'share a host folder (QEMU, virtio-9p): HOSTDIR:GUESTDIR[:ro], mounted on every boot (repeatable)')
        .argParser(collect)
        .default([]),
  },
  {
    key: 'initScript',
    make: () => new Option('--init-script <file>', 'run FILE once as root when the first boot is ready; output in vm logs; create fails if it fails'),
  },
  {
    key: 'ttl',
    make: () =>
      new Option(
        '--ttl <duration>',
        'lifetime: the VM is stopped or removed (--on-expire) this long after create, e.g. 30m, 2h, 1d (default: config vm.ttl, none); survives daemon restarts, see vm extend',
      ).argParser(durationArg('--ttl')),
  },
  {
    key: 'onExpire',
    make: () =>
      new Option('--on-expire <action>', 'what the end of --ttl does: stop (disk kept) or rm (default: config vm.onExpire, stop)').choices(['stop', 'rm']),
  },
  {
    key: 'cpuQuota',
    make: () =>
      new Option(
        '--cpu-quota <fraction>',
        "cap the VMM's CPU time at FRACTION of one host CPU, e.g. 0.5 or 2 (cgroup cpu.max; default: config limits.cpuQuota)",
      ).argParser(numArg('--cpu-quota')),
  },
  {
    key: 'diskIops',
    make: () =>
      new Option('--disk-iops <n>', 'throttle each disk to N I/O operations per second (default: config limits.diskIops)').argParser(intArg('--disk-iops')),
  },
  {
    key: 'diskBps',
    make: () => new Option('--disk-bps <n>', 'throttle each disk to N bytes per second (default: config limits.diskBps)').argParser(intArg('--disk-bps')),
  },
  { key: 'keepOnFailure', make: () => new Option('--keep-on-failure', 'when create fails, keep the VM for inspection instead of removing everything it made') },
];

/** Adds the shared create options to `cmd` (all of them but `omit`); returns `cmd`. */
export function addCreateOptions(cmd: Command, omit: OmittableCreateOption[] = []): Command {
  for (const o of CREATE_OPTIONS) if (!(omit as string[]).includes(o.key)) cmd.addOption(o.make());
  return cmd;
}

/**
 * The `vm.create` params (all but `image`) for parsed flags: sizes and names as given (the
 * daemon validates them and names the field), -p/--mount/--init-script through createExtras
 * (relative HOSTDIR made absolute, the script read here and sent base64).
 */
export async function createParams(o: CreateFlags): Promise<CreateParamsWire> {
  const p: CreateParamsWire = {
    name: o.name,
    kernel: o.kernel,
    vcpu: o.vcpu,
    memoryMiB: o.memory,
    diskSize: o.diskSize,
    workDisk: o.workDisk,
    nat: !!o.nat,
    egress: o.egress,
    allow: o.allow?.length ? o.allow : undefined,
    allowVm: o.allowVm?.length ? o.allowVm : undefined,
    start: o.start,
    wait: o.wait,
    cold: o.cold,
    vmm: o.vmm,
    packageMirror: o.packageMirror,
    packageProxy: o.packageProxy,
    ttl: o.ttl,
    onExpire: o.onExpire,
    cpuQuota: o.cpuQuota,
    diskIops: o.diskIops,
    diskBps: o.diskBps,
    portMaxConnections: o.portMaxConns,
    portIdleTimeoutSeconds: o.portIdleTimeout,
    ...(await createExtras(o)),
  };
  for (const k of Object.keys(p) as Array<keyof typeof p>) if (p[k] === undefined) delete p[k];
  return p;
}

import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import { VMM_CHOICES, type VmmChoiceName } from '../../core/vmm.js';
import { BangerError, ErrorCode } from '../../core/errors.js';
import { humanSize } from '../../core/fsutil.js';
import type { Cli } from '../context.js';
import type { ImagePrepared, WarmSnapshot } from '../../rpc/types.js';
import { registerWarmCommand } from './image-warm.js';
import { age, table } from '../table.js';

/** "2026-05-01T10:00:00Z, 152 s, 87 packages added, 310 MiB". */
function warmLine(w: WarmSnapshot): string {
  return `${w.vcpu} vCPU, ${w.memoryMiB} MiB, kernel ${w.kernel} (${w.vmm}): ${humanSize(w.bytes.allocated)} on disk, ${w.createdAt}`;
}

function preparedLine(p: ImagePrepared): string {
  return `${p.preparedAt}, took ${Math.round(p.durationMs / 1000)} s, ${p.packages.length} packages added, ${humanSize(p.sizeBytes)} on disk`;
}

function shortDigest(d: string): string {
  return d ? d.replace(/^sha256:/, '').slice(0, 12) : '';
}

/** `banger image …` and `banger registry login|logout`. Handlers return data; `emit` prints. */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: a flat list of commander definitions, one short block per subcommand; splitting it would scatter the command group
export function registerImageCommands(program: Command, cli: () => Cli): void {
  const image = program.command('image').description('pull OCI images into bootable ext4 root filesystems, and manage them');
  registerWarmCommand(image, cli);

  image
    .command('pull')
    .description('pull an OCI image from a registry and build its ext4 root filesystem (no Docker needed)')
    .argument('<ref>', 'image reference, normalised like Docker: debian → docker.io/library/debian:latest')
    .option('--name <name>', 'local image name (default: repository and tag, e.g. debian-bookworm)')
    .option('--kernel-ref <kernel>', 'default kernel for VMs made from this image (see banger kernel list)')
    .option('--platform <os/arch[/variant]>', 'platform to select from a multi-platform image', 'linux/amd64')
    .option('--size <size>', 'size of the ext4 file, e.g. 2G (default: content x 1.5, at least 1 GiB)')
    .option('--prepare', 'prepare it right after the pull when it needs the first-boot install (see banger image prepare)')
    .option('--package-mirror <url>', 'with --prepare: archive the install uses (default: config firstBoot.packageMirror)')
    .option('--package-proxy <url>', 'with --prepare: HTTP proxy for the install (default: config firstBoot.packageProxy)')
    .addHelpText(
      'after',
      `
Layers are verified by digest, cached in the content store (never downloaded twice) and applied
oldest-first with whiteouts, owners, modes, hard links, device nodes and xattrs; the ext4 is
built with mkfs.ext4 -d and checked with e2fsck. Press Ctrl-C to cancel: nothing is left behind.

Credentials: 'banger registry login', else the daemon user's ~/.docker/config.json (auths,
credHelpers, credsStore). Mirrors and plain-HTTP registries: config keys registryMirrors and
insecureRegistries (localhost and 127.0.0.1 always use plain HTTP).

Examples:
  banger image pull debian:bookworm --kernel-ref debian-cloud-amd64
  banger image pull docker.io/library/alpine:3.20 --name alpine --size 2G
  banger image pull localhost:5000/team/app@sha256:<digest> --platform linux/amd64
  banger --json image pull ubuntu:24.04`,
    )
    .action(
      async (
        ref: string,
        o: { name?: string; kernelRef?: string; platform?: string; size?: string; prepare?: boolean; packageMirror?: string; packageProxy?: string },
      ) => {
        const c = cli();
        if ((o.packageMirror || o.packageProxy) && !o.prepare)
          throw new BangerError(ErrorCode.Invalid, '--package-mirror and --package-proxy go with --prepare', {
            hint: 'add --prepare, or give them to banger image prepare / vm create',
          });
        const rec = await c.call(
          'image.pull',
          {
            ref,
            name: o.name,
            kernelRef: o.kernelRef,
            platform: o.platform,
            sizeBytes: o.size,
            ...(o.prepare ? { prepare: true, packageMirror: o.packageMirror, packageProxy: o.packageProxy } : {}),
          },
          { progress: true },
        );
        c.emit(
          rec,
          (r) =>
            `pulled ${r.sourceRef} (${shortDigest(r.digest)}) as image '${r.name}': ${humanSize(r.sizeBytes)} ext4 at ${r.rootfsPath}${r.prepared ? `; prepared (${preparedLine(r.prepared)})` : ''}`,
        );
      },
    );

  image
    .command('prepare')
    .description('prepare an image once: its first-boot install runs in a builder VM, and VMs start from the result')
    .argument('<name>', 'image name')
    .option('--kernel <kernel>', "kernel of the builder VM (default: the image's --kernel-ref, else the default kernel)")
    .option('--package-mirror <url>', "archive the install uses instead of the guest's sources (default: config firstBoot.packageMirror)")
    .option('--package-proxy <url>', 'HTTP proxy for the install (default: config firstBoot.packageProxy)')
    .addOption(new Option('--vmm <vmm>', 'VMM of the builder VM').choices([...VMM_CHOICES]))
    .option('--force', 'prepare again even when the prepared disk matches the image, kernel and first-boot script')
    .option('--no-warm', 'do not warm the image afterwards (default: config firstBoot.warmAfterPrepare; see image warm)')
    .addHelpText(
      'after',
      `
An image without systemd or an SSH server (docker.io's debian:bookworm) needs them installed
before it can boot as a VM. banger does that once per image: a builder VM boots the image with
the package mirror or proxy, the first-boot script installs, removes what must differ per VM
(machine-id, SSH host keys, package lists and caches, logs, random seed) and powers off, and
the result is kept as the image's prepared disk (the image itself is never written). Every VM
of the image then boots straight into systemd, without the install or the mirror.

The first 'vm create' of an unprepared image does this by itself (stage 'prepare'); a changed
image, kernel or first-boot script prepares again. Images that ship systemd and sshd need
nothing (this command says so).

Examples:
  banger image prepare debian-bookworm
  banger image prepare debian-bookworm --package-mirror http://10.0.0.1:8080/debian
  banger image pull debian:bookworm --prepare --package-proxy http://10.0.0.1:3128`,
    )
    .action(
      async (name: string, o: { kernel?: string; packageMirror?: string; packageProxy?: string; vmm?: VmmChoiceName; force?: boolean; warm?: boolean }) => {
        const c = cli();
        const r = await c.call(
          'image.prepare',
          {
            name,
            kernel: o.kernel,
            packageMirror: o.packageMirror,
            packageProxy: o.packageProxy,
            force: !!o.force,
            vmm: o.vmm,
            ...(o.warm === false ? { warm: false } : {}),
          },
          { progress: true },
        );
        c.emit(r, (x) =>
          [
            !x.needed
              ? `image '${x.image}' has systemd and an SSH server: nothing to prepare`
              : `image '${x.image}' ${x.prepared ? 'prepared' : 'is prepared already'}: ${x.record ? preparedLine(x.record) : ''}`,
            ...(x.warm ? [`warm: ${warmLine(x.warm)}`] : []),
            ...(x.warmError ? [`warm failed (the prepare stands): ${x.warmError}`] : []),
          ].join('\n'),
        );
      },
    );

  image
    .command('import')
    .description('make an image from a root filesystem tarball or directory on this machine')
    .argument('<name>', 'name of the new image')
    .option('--rootfs-tar <path>', 'tar archive of a root filesystem (plain, gzip or zstd)')
    .option('--rootfs-dir <path>', 'directory holding a root filesystem (copied, never modified)')
    .option('--kernel-ref <kernel>', 'default kernel for VMs made from this image')
    .option('--size <size>', 'size of the ext4 file, e.g. 2G (default: content x 1.5, at least 1 GiB)')
    .addHelpText(
      'after',
      `
Examples:
  banger image import mydeb --rootfs-tar ./bookworm.tar.gz
  sudo debootstrap --variant=minbase bookworm /srv/rootfs && banger image import mydeb --rootfs-dir /srv/rootfs`,
    )
    .action(async (name: string, o: { rootfsTar?: string; rootfsDir?: string; kernelRef?: string; size?: string }) => {
      const c = cli();
      if (!!o.rootfsTar === !!o.rootfsDir)
        throw new BangerError(ErrorCode.Invalid, 'give exactly one of --rootfs-tar or --rootfs-dir', { hint: 'banger image import --help' });
      const rec = await c.call(
        'image.import',
        { name, rootfsTar: o.rootfsTar && resolve(o.rootfsTar), rootfsDir: o.rootfsDir && resolve(o.rootfsDir), kernelRef: o.kernelRef, sizeBytes: o.size },
        { progress: true },
      );
      c.emit(rec, (r) => `imported '${r.name}': ${humanSize(r.sizeBytes)} ext4 at ${r.rootfsPath}`);
    });

  image
    .command('list')
    .alias('ls')
    .description('list images')
    .addHelpText('after', '\nExamples:\n  banger image list\n  banger --json image list')
    .action(async () => {
      const c = cli();
      const rows = await c.call('image.list', {});
      c.emit(rows, (rs) =>
        rs.length
          ? table(
              ['NAME', 'SOURCE', 'DIGEST', 'SIZE', 'KERNEL', 'CREATED'],
              rs.map((r) => [r.name, r.sourceRef, shortDigest(r.digest), humanSize(r.sizeBytes), r.kernelRef, age(r.createdAt)]),
            )
          : 'no images (pull one: banger image pull debian:bookworm)',
      );
    });

  image
    .command('show')
    .description('show one image (--json includes rootfsPath and digest)')
    .argument('<name>', 'image name')
    .addHelpText('after', '\nExamples:\n  banger image show debian-bookworm\n  banger --json image show debian-bookworm')
    .action(async (name: string) => {
      const c = cli();
      const r = await c.call('image.show', { name });
      c.emit(r, (d) =>
        [
          `name:        ${d.name}`,
          `source:      ${d.sourceRef}`,
          `digest:      ${d.digest || '-'}`,
          `platform:    ${d.platform}`,
          `size:        ${humanSize(d.sizeBytes)}`,
          `kernel:      ${d.kernelRef ?? '-'}`,
          `rootfs:      ${d.rootfsPath}`,
          `created:     ${d.createdAt}`,
          `entrypoint:  ${JSON.stringify(d.config.entrypoint)}  cmd: ${JSON.stringify(d.config.cmd)}`,
          `user:        ${d.config.user || '-'}  workdir: ${d.config.workdir || '-'}`,
          `env:         ${d.config.env.join(' ') || '-'}`,
          `layers:      ${d.blobs.length ? d.blobs.length - 1 : 0}`,
          `used by:     ${d.usedBy.join(', ') || '-'}`,
          `warm:        ${d.warm?.length ? d.warm.map(warmLine).join('\n             ') : 'no'}`,
          `prepared:    ${d.prepared ? preparedLine(d.prepared) : 'no'}`,
          ...(d.prepared
            ? [
                `  disk:      ${d.prepared.diskPath}`,
                `  kernel:    ${d.prepared.kernel}${d.prepared.packageMirror ? `  mirror: ${d.prepared.packageMirror}` : ''}${d.prepared.packageProxy ? `  proxy: ${d.prepared.packageProxy}` : ''}`,
                `  packages:  ${d.prepared.packages.map((p) => `${p.name} ${p.version}`.trim()).join(', ') || '-'}`,
              ]
            : []),
        ].join('\n'),
      );
    });

  image
    .command('rm')
    .aliases(['delete', 'remove'])
    .description('remove an image (refused while a VM uses it, unless --force)')
    .argument('<name>', 'image name')
    .option('-f, --force', 'remove even if VMs use it (they will no longer start)')
    .addHelpText('after', '\nExamples:\n  banger image rm debian-bookworm\n  banger image rm old --force\n\nCached layers stay until banger image prune-cache.')
    .action(async (name: string, o: { force?: boolean }) => {
      const c = cli();
      c.emit(await c.call('image.rm', { name, force: !!o.force }), (r) => `removed image '${r.removed.join("', '")}'`);
    });

  image
    .command('prune-cache')
    .description('remove cached blobs that no image, kernel or cache entry references (same as banger system prune)')
    .addHelpText('after', '\nExample:\n  banger image prune-cache')
    .action(async () => {
      const c = cli();
      c.emit(
        await c.call('system.prune', {}),
        (r) => `removed ${r.removed} blob(s)${r.preparedRemoved ? ` and ${r.preparedRemoved} stale prepared disk(s)` : ''}, freed ${humanSize(r.freedBytes)}`,
      );
    });

  const registry = program.command('registry').description('registry credentials used by banger image pull');
  registry
    .command('login')
    .description('check and store credentials for a registry (the password is read from stdin)')
    .argument('<registry>', 'registry host[:port], e.g. ghcr.io or localhost:5000 (docker.io for Docker Hub)')
    .requiredOption('-u, --username <user>', 'user name')
    .option('--password-stdin', 'read the password (or token) from stdin (the only way; never on the command line)')
    .addHelpText(
      'after',
      `
The credentials are verified against the registry before they are stored in the daemon's
database (root-only). They take precedence over ~/.docker/config.json.

Examples:
  echo "$TOKEN" | banger registry login ghcr.io -u me --password-stdin
  banger registry login localhost:5000 -u ci --password-stdin < pass.txt`,
    )
    .action(async (reg: string, o: { username: string; passwordStdin?: boolean }) => {
      const c = cli();
      if (!o.passwordStdin)
        throw new BangerError(ErrorCode.Invalid, 'pass --password-stdin and give the password on stdin', {
          hint: 'echo "$PASSWORD" | banger registry login REGISTRY -u USER --password-stdin',
        });
      const password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      if (!password) throw new BangerError(ErrorCode.Invalid, 'no password on stdin');
      c.emit(await c.call('registry.login', { registry: reg, username: o.username, password }), (r) => `login succeeded: ${r.username} @ ${r.registry}`);
    });
  registry
    .command('logout')
    .description('forget the credentials stored by banger registry login')
    .argument('<registry>', 'registry host[:port]')
    .addHelpText('after', '\nExample:\n  banger registry logout localhost:5000')
    .action(async (reg: string) => {
      const c = cli();
      c.emit(await c.call('registry.logout', { registry: reg }), (r) => `removed login for ${r.registry}`);
    });
}

import type { Command } from 'commander';
import { resolve } from 'node:path';
import { humanSize } from '../../core/fsutil.js';
import type { Cli } from '../context.js';
import type { CatalogEntry, Kernel, KernelPullResult } from '../../rpc/types.js';
import { age, table } from '../table.js';

/** `banger kernel list|show|pull|rm|import`: thin wiring, one RPC call each; handlers return data, `emit` prints. */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: a flat list of commander definitions, one short block per subcommand; splitting it would scatter the command group
export function registerKernelCommands(program: Command, cli: () => Cli): void {
  const kernel = program
    .command('kernel')
    .description('list, pull, import and remove guest kernels')
    .addHelpText(
      'after',
      `
Kernels come from catalogs: one embedded in banger (a Debian cloud kernel fetched from Debian's
signed archive) and any remote ones named in the daemon's config key "kernelCatalogs" (http,
https or file URLs) or in BANGER_KERNEL_CATALOGS (comma-separated http/https URLs; the CLI sends
its own to the daemon), merged over it by name, later ones winning.

Examples:
  banger kernel list --available         # what can be pulled, and what is already
  banger kernel pull debian-cloud-amd64  # download, verify and install
  banger kernel show debian-cloud-amd64
  banger kernel import mykernel --vmlinux ./vmlinux --initrd ./initrd.img
  banger kernel rm mykernel`,
    );

  kernel
    .command('list')
    .alias('ls')
    .description('list pulled and imported kernels (with --available: the catalog)')
    .option('--available', 'show the catalog instead: every kernel that can be pulled, with STATE pulled/available and its download SIZE')
    .addHelpText(
      'after',
      '\nExamples:\n  banger kernel list\n  banger kernel list --available\n  BANGER_KERNEL_CATALOGS=https://example.org/kernels.json banger kernel list --available\n  banger --json kernel list',
    )
    .action(async (o: { available?: boolean }) => {
      const c = cli();
      if (o.available) {
        const res = await c.call('kernel.catalog', { catalogs: envCatalogs(c.env) });
        c.emit(res, renderCatalog);
        // A catalog that could not be read does not hide the others; say which one was skipped.
        for (const w of res.warnings ?? []) process.stderr.write(`warning: skipped ${w.message}${w.hint ? `\nhint: ${w.hint}` : ''}\n`);
        return;
      }
      const res = await c.call('kernel.list', {});
      c.emit(res, (d) => renderKernelList(d));
    });

  kernel
    .command('show')
    .description('show one kernel: its files, version, source and manifest')
    .argument('<name>', 'kernel name (see banger kernel list)')
    .addHelpText('after', '\nExamples:\n  banger kernel show debian-cloud-amd64\n  banger --json kernel show debian-cloud-amd64')
    .action(async (name: string) => {
      const c = cli();
      const k = await c.call('kernel.show', { name });
      c.emit(k, renderKernel);
    });

  kernel
    .command('pull')
    .description('download a catalog kernel, verify its sha256 and install it')
    .argument('<name>', 'catalog name (see banger kernel list --available)')
    .option('--force', 're-pull and replace a kernel that is already pulled (the old one stays if the pull fails)')
    .addHelpText(
      'after',
      `
The bundle is streamed to the content store while its sha256 is computed, verified against the
catalog, then unpacked (zstd + tar) into a staging directory and renamed into place. Bundles may
hold only regular files, directories and symlinks that stay inside the bundle; anything else is
refused and nothing is left behind. A bundle already in the content store is not downloaded
again ("used cache"). Ctrl-C cancels and cleans up.

Examples:
  banger kernel pull debian-cloud-amd64
  banger kernel pull debian-cloud-amd64 --force
  banger --json kernel pull mykernel`,
    )
    .action(async (name: string, o: { force?: boolean }) => {
      const c = cli();
      const res = await c.call('kernel.pull', { name, force: !!o.force, catalogs: envCatalogs(c.env) }, { progress: true });
      c.emit(res, renderPull);
    });

  kernel
    .command('rm')
    .aliases(['delete', 'remove'])
    .description('remove a kernel (refused while a VM uses it, unless --force)')
    .argument('<name>', 'kernel name')
    .option('--force', 'remove it even if VMs reference it (they will not start again until it is pulled back)')
    .addHelpText('after', '\nExamples:\n  banger kernel rm mykernel\n  banger kernel rm debian-cloud-amd64 --force')
    .action(async (name: string, o: { force?: boolean }) => {
      const c = cli();
      const res = await c.call('kernel.rm', { name, force: !!o.force });
      c.emit(res, (d) => `removed kernel ${d.removed.join(', ')}${d.usedBy.length ? ` (still referenced by VM(s): ${d.usedBy.join(', ')})` : ''}`);
    });

  kernel
    .command('import')
    .description('copy a local kernel (vmlinux or bzImage, optional initrd and modules) into the store')
    .argument('<name>', 'name to give the kernel')
    .requiredOption('--vmlinux <path>', 'kernel image: an ELF vmlinux, or a bzImage/vmlinuz (detected by magic)')
    .option('--initrd <path>', 'initramfs to boot with (stored as initrd.img)')
    .option('--modules <dir>', 'module tree to keep beside the kernel (stored as modules/)')
    .option('--kernel-version <version>', 'kernel version to record (default: read from the image)')
    .option('--distro <name>', 'distribution label to record', 'custom')
    .option('--arch <arch>', 'architecture to record (default: read from the image)')
    .option('--force', 'replace an existing kernel of that name')
    .addHelpText(
      'after',
      `
Files are copied (the originals are not needed afterwards) and a manifest.json is written with
the sha256 of the image and source "import:<path>".

Examples:
  banger kernel import mykernel --vmlinux ./vmlinux
  banger kernel import deb61 --vmlinux /boot/vmlinuz-6.1.0-37-cloud-amd64 --initrd /boot/initrd.img-6.1.0-37-cloud-amd64
  banger kernel import custom --vmlinux out/vmlinux --modules out/lib/modules/6.1.0 --force`,
    )
    .action(
      async (
        name: string,
        o: { vmlinux: string; initrd?: string; modules?: string; kernelVersion?: string; distro?: string; arch?: string; force?: boolean },
      ) => {
        const c = cli();
        const params = {
          name,
          vmlinux: resolve(o.vmlinux),
          initrd: o.initrd === undefined ? undefined : resolve(o.initrd),
          modules: o.modules === undefined ? undefined : resolve(o.modules),
          kernelVersion: o.kernelVersion,
          distro: o.distro,
          arch: o.arch,
          force: !!o.force,
        };
        const k = await c.call('kernel.import', params, { progress: true });
        c.emit(
          k,
          (d) =>
            `imported kernel ${d.name} ${d.kernelVersion} (${d.vmlinux ? 'vmlinux' : 'vmlinuz'}${d.initrd ? ' + initrd' : ''}${d.modulesDir ? ' + modules' : ''}, ${humanSize(d.sizeBytes)}) in ${d.dir}`,
        );
      },
    );
}

/**
 * BANGER_KERNEL_CATALOGS of the CLI's own environment, forwarded to the daemon (which may run
 * under systemd with another environment); merged after the daemon's configured catalogs.
 */
export function envCatalogs(env: NodeJS.ProcessEnv): string[] | undefined {
  const list = (env.BANGER_KERNEL_CATALOGS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list.length ? list : undefined;
}

/** Human renderings (pure; unit-tested). Programs use --json instead. */
/** The catalog fields the table shows. */
export type CatalogRow = Pick<CatalogEntry, 'name' | 'kind' | 'distro' | 'arch' | 'kernelVersion' | 'sizeBytes' | 'state' | 'description'>;

export function renderCatalog(d: { entries: CatalogRow[] }): string {
  return table(
    ['NAME', 'DISTRO', 'ARCH', 'VERSION', 'SIZE', 'STATE', 'DESCRIPTION'],
    d.entries.map((e) => [
      e.name,
      e.distro,
      e.arch,
      e.kernelVersion,
      e.sizeBytes === undefined ? undefined : `${e.kind === 'debian' ? '~' : ''}${humanSize(e.sizeBytes)}`,
      e.state,
      e.description,
    ]),
  );
}

export function renderKernelList(kernels: Kernel[], now = Date.now()): string {
  if (kernels.length === 0) return "no kernels yet: see 'banger kernel list --available', then 'banger kernel pull NAME'";
  return table(
    ['NAME', 'DISTRO', 'ARCH', 'VERSION', 'SIZE', 'CREATED', 'SOURCE'],
    kernels.map((k) => [k.name, k.distro, k.arch, k.kernelVersion, humanSize(k.sizeBytes), age(k.createdAt, now), k.source]),
  );
}

export function renderKernel(d: Kernel): string {
  return [
    `name:      ${d.name}`,
    `distro:    ${d.distro}`,
    `arch:      ${d.arch}`,
    `version:   ${d.kernelVersion}`,
    `source:    ${d.source}`,
    `sha256:    ${d.vmlinuxSha256}  (${d.vmlinux ? 'vmlinux' : 'vmlinuz'})`,
    `size:      ${humanSize(d.sizeBytes)}`,
    `created:   ${d.createdAt}`,
    `dir:       ${d.dir}`,
    `vmlinux:   ${d.vmlinux ?? '-'}`,
    `vmlinuz:   ${d.vmlinuz ?? '-'}`,
    `initrd:    ${d.initrd ?? '-'}`,
    `modules:   ${d.modulesDir ?? '-'}`,
  ].join('\n');
}

export function renderPull(d: KernelPullResult): string {
  const how = d.joined
    ? 'already pulled by a concurrent request'
    : d.download === 'cached'
      ? 'used cache'
      : d.download === 'debian'
        ? "from Debian's archive"
        : 'downloaded';
  return `${d.replaced ? 'replaced' : 'pulled'} kernel ${d.kernel.name} ${d.kernel.kernelVersion} (${how}, ${humanSize(d.kernel.sizeBytes)}) in ${d.kernel.dir}`;
}

import { InvalidArgumentError, Option, type Command } from 'commander';
import { VMM_CHOICES, type VmmChoiceName } from '../../core/vmm.js';
import { humanSize } from '../../core/fsutil.js';
import type { Cli } from '../context.js';

function intArg(flag: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${flag} must be a whole number, got '${v}'`);
    return Number(v);
  };
}

/** `banger image warm IMAGE`: boot the image once with a shape and keep its snapshot (vms/warm.ts). */
export function registerWarmCommand(image: Command, cli: () => Cli): void {
  image
    .command('warm')
    .description('boot an image once with a shape and keep its memory snapshot: vm create of that image and shape then restores it')
    .argument('<name>', 'image name')
    .option('--vcpu <n>', 'vCPUs of the shape (default: config vm.vcpu)', intArg('--vcpu'))
    .option('--memory <mib>', 'memory of the shape in MiB (default: config vm.memoryMiB)', intArg('--memory'))
    .option('--kernel <kernel>', "kernel of the shape (default: the image's --kernel-ref, else the default kernel)")
    .addOption(new Option('--vmm <vmm>', 'VMM of the shape').choices([...VMM_CHOICES]))
    .addHelpText(
      'after',
      `
A builder VM boots the image (prepared first when it needs it) to agent ready; its memory and
device state and its root disk are kept in the image's warm directory. 'vm create' of the image
with the same vCPU count, memory and kernel restores that state instead of booting (stage
'restore'), then gives the guest its own identity: MAC, IP, hostname, machine-id, SSH host key,
RNG seed and clock. Any other shape boots cold and says why (stage 'warm'). 'image show' lists
the warm snapshots; 'image rm' and 'system prune' free them.

Examples:
  banger image warm debian-bookworm
  banger image warm debian-bookworm --vcpu 2 --memory 1024`,
    )
    .action(async (name: string, o: { vcpu?: number; memory?: number; kernel?: string; vmm?: VmmChoiceName }) => {
      const c = cli();
      const r = await c.call('image.warm', { name, vcpu: o.vcpu, memoryMiB: o.memory, kernel: o.kernel, vmm: o.vmm }, { progress: true });
      c.emit(
        r,
        (w) => `image '${w.image}' warm for ${w.vcpu} vCPU, ${w.memoryMiB} MiB, kernel ${w.kernel} (${w.vmm}): ${humanSize(w.bytes.allocated)} on disk`,
      );
    });
}

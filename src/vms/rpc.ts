import { z } from 'zod';
import { VMM_CHOICES } from '../core/vmm.js';
import { method, Name, type MethodTable } from '../rpc/protocol.js';
import type { VmService } from './service.js';
import { PackageUrl } from './package-source.js';

const Names = z.array(Name).min(1).max(64);
const Size = z.string().min(1).max(32);
const Signal = z.enum(['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGSTOP', 'SIGCONT']);

/** RPC surface of the vm domain (`vm.*`). Params are validated here, at the boundary. */
export function vmMethods(svc: VmService): MethodTable {
  return {
    'vm.create': method(
      z
        .object({
          image: Name,
          name: Name.optional(),
          kernel: Name.optional(),
          vcpu: z.number().int().min(1).max(32).optional(),
          memoryMiB: z.number().int().min(128).max(1024 * 1024).optional(),
          diskSize: Size.optional(),
          workDisk: Size.optional(),
          nat: z.boolean().optional(),
          start: z.boolean().optional(),
          wait: z.boolean().optional(),
          vmm: z.enum(VMM_CHOICES).optional(),
          packageMirror: PackageUrl.optional(),
          packageProxy: PackageUrl.optional(),
        })
        .strict(),
      (p, c) => svc.create(p, c),
    ),
    'vm.start': method(z.object({ names: Names, wait: z.boolean().optional() }).strict(), (p, c) => svc.start(p.names, c, { wait: p.wait })),
    'vm.stop': method(z.object({ names: Names }).strict(), (p, c) => svc.stop(p.names, c)),
    'vm.restart': method(z.object({ names: Names }).strict(), (p, c) => svc.restart(p.names, c)),
    'vm.kill': method(z.object({ names: Names, signal: Signal.optional() }).strict(), (p) => svc.kill(p.names, p.signal)),
    'vm.rm': method(z.object({ names: Names, force: z.boolean().optional() }).strict(), (p, c) => svc.rm(p.names, !!p.force, c)),
    'vm.prune': method(z.object({}).strict(), (_p, c) => svc.prune(c)),
    'vm.list': method(z.object({}).strict(), () => svc.list()),
    'vm.show': method(z.object({ name: Name }).strict(), (p) => svc.show(p.name)),
    'vm.logs': method(z.object({ name: Name, offset: z.number().int().min(0).optional() }).strict(), (p) => svc.logs(p.name, p.offset ?? 0)),
    'vm.sshInfo': method(z.object({ name: Name }).strict(), (p) => svc.sshInfo(p.name)),
    'vm.sshConfig': method(z.object({}).strict(), () => svc.refreshSshConfig()),
    'vm.ports': method(z.object({ name: Name }).strict(), (p) => svc.ports(p.name)),
  };
}

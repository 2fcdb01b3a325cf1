import { z } from 'zod';
import { bind, type HandlersFor } from '../../rpc/bind.js';
import type { MethodTable } from '../../rpc/protocol.js';
import type { ListeningPort } from '../../rpc/types.js';
import type { VmService } from '../../vms/service.js';
import type { MethodContext } from '../../rpc/protocol.js';
import { execStream, guestStat, tarStream } from './agent.js';

/** A guest agent's port entry; entries that do not have this shape are dropped, not passed on. */
const Port = z.object({ proto: z.string(), address: z.string(), port: z.number().int() }).passthrough();

function ports(raw: unknown[]): ListeningPort[] {
  return raw.flatMap((p) => {
    const r = Port.safeParse(p);
    return r.success ? [r.data] : [];
  });
}

/** `vm.*`: the contract's VM methods bound to the VM service. */
export function vmMethods(svc: VmService): MethodTable {
  const h: HandlersFor<'vm.'> = {
    'vm.create': (p, op) => svc.create(p, op),
    'vm.start': (p, op) => svc.start(p.names, op, { wait: p.wait }),
    'vm.stop': (p, op) => svc.stop(p.names, op),
    'vm.restart': (p, op) => svc.restart(p.names, op),
    'vm.kill': (p) => svc.kill(p.names, p.signal),
    'vm.pause': (p, op) => svc.pause(p.names, op),
    'vm.snapshot': (p, op) => svc.snapshot(p.name, p.tag, op),
    'vm.snapshots': (p) => svc.snapshots(p.name),
    'vm.snapshotRm': (p) => svc.snapshotRm(p.name, p.tag),
    'vm.fork': (p, op) => svc.fork(p.name, p.newName, p.count ?? 1, op),
    'vm.resume': (p, op) => svc.resume(p.names, op),
    'vm.rm': (p, op) => svc.rm(p.names, !!p.force, op),
    'vm.prune': (_p, op) => svc.prune(op),
    'vm.list': () => svc.list(),
    'vm.extend': (p) => svc.extend(p.name, p.by, p.onExpire),
    'vm.update': (p) => svc.update(p),
    'vm.show': async (p) => {
      const r = await svc.show(p.name);
      return { ...r, files: { ...r.files } };
    },
    'vm.logs': (p) => svc.logs(p.name, p.offset ?? 0),
    'vm.sshInfo': (p) => svc.sshInfo(p.name),
    'vm.sshConfig': () => svc.refreshSshConfig(),
    'vm.stat': (p, op) => guestStat(svc, p.name, p.path, op.signal),
    // The RPC server hands these an upgradable context (MethodContext.upgrade): they stream.
    'vm.exec': (p, op) => execStream(svc, p, op as MethodContext),
    'vm.cpOut': (p, op) => tarStream(svc, 'out', p, op as MethodContext),
    'vm.cpIn': (p, op) => tarStream(svc, 'in', p, op as MethodContext),
    'vm.ports': async (p) => {
      const r = await svc.ports(p.name);
      return { ...r, ports: ports(r.ports) };
    },
  };
  return bind(h);
}

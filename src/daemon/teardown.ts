import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { OperationContext } from '../core/operation.js';
import type { TeardownResult } from '../rpc/types.js';
import type { Services } from './services.js';

/**
 * Bring the host back to what it was before this instance ran anything: stop every running VM
 * (its VMM, virtiofsd, published ports, tap and NAT rules go with it; a VM whose stop fails is
 * killed), then remove whatever network state this instance still holds: taps, NAT rules, the
 * nft table if no instance uses it, the bridge if it is ours. VM records, disks and images stay
 * (the package's postrm removes them on purge). Run by the .deb's prerm on remove and purge,
 * through `banger system teardown`. Idempotent.
 */
export async function teardown(services: Services, log: Logger, op?: OperationContext): Promise<TeardownResult> {
  const stopped: string[] = [];
  const failed: string[] = [];
  for (const vm of await services.vms.list()) {
    if (!vm.running) continue;
    try {
      await services.vms.stop([vm.name], op ?? {});
      stopped.push(vm.name);
    } catch (e) {
      log.warn('teardown: stop failed, killing', { vm: vm.name, error: errorMessage(e) });
      try {
        await services.vms.kill([vm.name], 'SIGKILL');
        stopped.push(vm.name);
      } catch (e2) {
        log.error('teardown: kill failed', { vm: vm.name, error: errorMessage(e2) });
        failed.push(vm.name);
      }
    }
  }
  op?.progress({ stage: 'network', message: 'removing taps, NAT rules and the bridge' });
  const net = await services.network.teardown();
  op?.progress({ stage: 'network', done: true });
  log.info('teardown done', { stopped, failed, ...net });
  return { stopped, failed, ...net };
}

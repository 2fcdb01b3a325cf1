import { loadConfig } from '../core/config.js';
import { errorMessage } from '../core/errors.js';
import { firecrackerVersion, MIN_FIRECRACKER, versionSupported } from '../vms/drivers/firecracker/version.js';
import type { Check } from './checks.js';

/**
 * `banger doctor` check `firecracker`: the configured binary (`binaries.firecracker`, env
 * BANGER_FIRECRACKER, then PATH) and its version (`firecracker --version`). Absent: warn
 * (optional; QEMU runs VMs). Present but older than 1.5, or not answering: fail.
 */
export const firecrackerCheck: Check = {
  name: 'firecracker',
  description: `firecracker ${MIN_FIRECRACKER.join('.')} or newer is installed (optional)`,
  async run(h) {
    let bin = 'firecracker';
    try {
      bin = loadConfig().binaries.firecracker;
    } catch {
      /* a bad config file is reported by the daemon; probe the default name */
    }
    const path = await h.which(bin);
    if (!path) return { name: 'firecracker', status: 'warn', detail: `${bin} not found`, hint: 'optional: install firecracker to use --vmm firecracker (needs usable KVM); see docs/firecracker.md' };
    try {
      const v = await firecrackerVersion(path);
      if (!versionSupported(v)) return { name: 'firecracker', status: 'fail', detail: `${path} is v${v}, older than ${MIN_FIRECRACKER.join('.')}`, hint: `install Firecracker ${MIN_FIRECRACKER.join('.')} or newer (tested against the v1.16.1 API)` };
      return { name: 'firecracker', status: 'pass', detail: `${path} v${v}` };
    } catch (e) {
      return { name: 'firecracker', status: 'fail', detail: errorMessage(e), hint: `check that ${path} is a Firecracker binary` };
    }
  },
};

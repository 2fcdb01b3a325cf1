import type { DriverRegistration } from '../types.js';
import { FirecrackerDriver } from './driver.js';

export { FirecrackerDriver } from './driver.js';

/** Firecracker's registration (listed first in ../registry.ts: `auto` prefers it where it is usable). */
export const firecrackerDriver: DriverRegistration = {
  kind: 'firecracker',
  create: (d) =>
    new FirecrackerDriver(d.exec, { firecracker: d.binaries.firecracker, jailer: d.firecracker?.jailer?.enabled ? d.firecracker.jailer : undefined }),
};

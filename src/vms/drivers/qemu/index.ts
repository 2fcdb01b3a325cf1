import type { DriverRegistration } from '../types.js';
import { QemuDriver } from './driver.js';

export { QemuDriver } from './driver.js';
export { qemuArgv, qemuLaunch, qopt, type QemuLaunch } from './argv.js';

/** QEMU's registration (listed in ../registry.ts). */
export const qemuDriver: DriverRegistration = {
  kind: 'qemu',
  create: (d) => new QemuDriver(d.exec, { qemu: d.binaries.qemu, qemuImg: d.binaries.qemuImg }),
};

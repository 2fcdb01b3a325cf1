import type { DB } from '../core/db.js';
import type { VmUsage } from '../core/usage.js';

/**
 * `VmUsage` over the `vms` table, which vms owns: the only place outside `vms/store.ts` that
 * reads it, so kernels and images never query it themselves. Read-only, no side effects.
 */
export class VmTableUsage implements VmUsage {
  constructor(private readonly db: DB) {}

  vmsUsingKernel(name: string): string[] {
    return (this.db.prepare('SELECT name FROM vms WHERE kernel_name = ? ORDER BY name').all(name) as { name: string }[]).map((r) => r.name);
  }

  vmsUsingImage(name: string): string[] {
    return (this.db.prepare('SELECT name FROM vms WHERE image_name = ? ORDER BY name').all(name) as { name: string }[]).map((r) => r.name);
  }

  baseDisksInUse(): string[] {
    const out = new Set<string>();
    for (const r of this.db.prepare('SELECT spec_json FROM vms').all() as { spec_json: string }[]) {
      const base = (JSON.parse(r.spec_json) as { baseDisk?: unknown }).baseDisk;
      if (typeof base === 'string') out.add(base);
    }
    return [...out].sort();
  }
}

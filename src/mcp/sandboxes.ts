import { BangerError, ErrorCode } from '../core/errors.js';
import type { Banger, Vm, VmInfo } from '../sdk/index.js';
import type { McpOptions } from './options.js';

/**
 * The VMs a `banger mcp` server may touch: the ones it created (or, with `--all`, every VM),
 * with their lifetimes. The VM-count limit counts creations still under way, so parallel
 * `sandbox_create` calls cannot overshoot it. TTL lives here until the daemon has its own
 * (issue 24): it holds while this server runs, and `removeAll` runs when it exits.
 */
export class Sandboxes {
  private readonly owned = new Map<string, { expires?: NodeJS.Timeout }>();
  private creating = 0;

  constructor(
    private readonly b: Banger,
    private readonly opts: McpOptions,
    private readonly log: (line: string) => void,
  ) {}

  /** The handle of a VM this server may act on; E_NOT_FOUND for any other. */
  async get(name: string): Promise<Vm> {
    if (!this.opts.all && !this.owned.has(name)) {
      throw new BangerError(ErrorCode.NotFound, `no sandbox named '${name}'`, {
        hint: 'sandbox_list shows the sandboxes this server created (it sees only those unless started with --all); sandbox_create makes one',
      });
    }
    return this.b.vms.get(name);
  }

  /** The VMs this server may see. */
  async list(): Promise<VmInfo[]> {
    const all = await this.b.vms.list();
    return this.opts.all ? all : all.filter((v) => this.owned.has(v.name));
  }

  isOwned(name: string): boolean {
    return this.owned.has(name);
  }

  /** Runs `create` within the VM-count limit and takes ownership of the result. */
  async create(ttlSeconds: number, create: () => Promise<Vm>): Promise<Vm> {
    if (this.owned.size + this.creating >= this.opts.maxVms) {
      throw new BangerError(
        ErrorCode.TooLarge,
        `this server already has ${this.owned.size + this.creating} sandbox(es), its limit (--max-vms ${this.opts.maxVms})`,
        { hint: 'remove one with sandbox_remove first' },
      );
    }
    this.creating++;
    try {
      const vm = await create();
      const entry: { expires?: NodeJS.Timeout } = {};
      if (ttlSeconds > 0) {
        entry.expires = setTimeout(() => void this.expire(vm.name), ttlSeconds * 1000);
        entry.expires.unref();
      }
      this.owned.set(vm.name, entry);
      return vm;
    } finally {
      this.creating--;
    }
  }

  /** Removes a VM (stopping it) and forgets it. */
  async remove(name: string): Promise<string[]> {
    const vm = await this.get(name);
    const r = await vm.rm({ force: true });
    this.forget(name);
    return r.removed;
  }

  private forget(name: string): void {
    clearTimeout(this.owned.get(name)?.expires);
    this.owned.delete(name);
  }

  private async expire(name: string): Promise<void> {
    this.log(`sandbox ${name}: its time to live ran out; removing it`);
    await this.remove(name).catch((e: unknown) => this.log(`sandbox ${name}: removal failed: ${(e as Error).message}`));
  }

  /** Removes every VM this server created (on exit). */
  async removeAll(): Promise<void> {
    const names = [...this.owned.keys()];
    for (const n of names) clearTimeout(this.owned.get(n)?.expires);
    if (!names.length) return;
    this.log(`removing this server's sandboxes: ${names.join(', ')}`);
    await Promise.all(
      names.map((n) =>
        this.b.vms
          .get(n)
          .then((vm) => vm.rm({ force: true }))
          .then(
            () => this.owned.delete(n),
            (e: unknown) => this.log(`sandbox ${n}: removal failed: ${(e as Error).message}`),
          ),
      ),
    );
  }

  /** Names to leave behind (with --keep): only forgets the timers. */
  release(): string[] {
    const names = [...this.owned.keys()];
    for (const n of names) this.forget(n);
    return names;
  }
}

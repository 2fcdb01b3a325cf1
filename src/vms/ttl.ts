import { durationSeconds, extendedDeadline } from '../core/duration.js';
import { BangerError, ErrorCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { removeVm } from './delete.js';
import { view } from './queries.js';
import { refreshSshConfig } from './ssh-config.js';
import { stopVm } from './stop.js';
import type { OnExpire, VmRecord } from './store.js';
import type { VmBase, VmView } from './vm-base.js';

/**
 * Lifetimes (`vm create --ttl`, `vm extend`). A VM's deadline is stored in its row
 * (`vms.expires_at`, `on_expire`), so it holds across daemon restarts; one reaper in the daemon
 * sleeps until the next deadline and then stops or removes what is due. At daemon start the
 * reaper's first sweep runs right after reconcile, so a VM whose deadline passed while no daemon
 * ran is handled at once.
 */

export interface Lifetime {
  seconds: number;
  onExpire: OnExpire;
}

/** The lifetime a create asks for: its own `ttl`, else config `vm.ttl`; none when neither is set. */
export function lifetimeOf(cfg: { ttl?: string; onExpire: OnExpire }, p: { ttl?: number; onExpire?: OnExpire }): Lifetime | undefined {
  const seconds = p.ttl ?? (cfg.ttl === undefined ? undefined : durationSeconds('config vm.ttl', cfg.ttl));
  if (seconds === undefined) {
    if (p.onExpire)
      throw new BangerError(ErrorCode.Invalid, '--on-expire needs a lifetime', {
        hint: 'add --ttl DURATION (e.g. --ttl 2h), or set vm.ttl in the config',
        details: { field: '--on-expire' },
      });
    return undefined;
  }
  return { seconds, onExpire: p.onExpire ?? cfg.onExpire };
}

/** Longest sleep between sweeps (a timer cannot sleep past ~24.8 days; a clock jump is caught too). */
export const MAX_SLEEP_MS = 3600_000;
/** After a failed expiry, the VM is tried again this much later (never a hot loop). */
export const RETRY_MS = 30_000;

/**
 * Which VMs are due at `now` (deadline reached, create finished, not waiting for a retry), and
 * when the next sweep should run (ms from `now`; undefined when nothing has a deadline).
 */
export function schedule(
  vms: Pick<VmRecord, 'name' | 'expiresAt' | 'createDone'>[],
  now: number,
  retryAt: ReadonlyMap<string, number> = new Map(),
): { due: string[]; nextInMs?: number } {
  const due: string[] = [];
  let next: number | undefined;
  for (const v of vms) {
    if (!v.expiresAt || !v.createDone) continue;
    const at = Math.max(Date.parse(v.expiresAt), retryAt.get(v.name) ?? 0);
    if (at <= now) due.push(v.name);
    else next = next === undefined ? at : Math.min(next, at);
  }
  return { due, nextInMs: next === undefined ? undefined : Math.min(next - now, MAX_SLEEP_MS) };
}

/**
 * The daemon's reaper: one timer, set for the next deadline; `poke()` re-plans after a deadline
 * was set or moved. A sweep expires due VMs one by one; a failure is logged and retried
 * RETRY_MS later.
 */
export class ExpiryReaper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly retryAt = new Map<string, number>();

  constructor(private readonly deps: { list(): VmRecord[]; expire(name: string): Promise<void>; log: Logger }) {}

  /** Sweep now (daemon start: deadlines that passed while no daemon ran), then keep sweeping. */
  start(): void {
    this.stopped = false;
    this.poke();
  }

  /** Re-plan: sweep now (cheap when nothing is due), which sets the timer for the next deadline. */
  poke(): void {
    if (this.stopped) return;
    if (this.running) return void (this.again = true);
    clearTimeout(this.timer);
    this.running = this.sweep().finally(() => {
      this.running = undefined;
      if (this.again) {
        this.again = false;
        this.poke();
      }
    });
  }

  /** No more sweeps; waits for one in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private async sweep(): Promise<void> {
    const { due } = schedule(this.deps.list(), Date.now(), this.retryAt);
    for (const name of due) {
      if (this.stopped) return;
      try {
        await this.deps.expire(name);
        this.retryAt.delete(name);
      } catch (e) {
        this.retryAt.set(name, Date.now() + RETRY_MS);
        this.deps.log.warn('vm expiry failed; will retry', { vm: name, error: errorMessage(e), retryInMs: RETRY_MS });
      }
    }
    if (this.stopped) return;
    const { nextInMs } = schedule(this.deps.list(), Date.now(), this.retryAt);
    if (nextInMs !== undefined) this.timer = setTimeout(() => this.poke(), Math.max(nextInMs, 0)).unref();
  }
}

/**
 * Expire one VM if its deadline passed (checked again under its lock: an extend may have won):
 * `rm` kills and removes it; `stop` shuts it down gracefully and clears its deadline (a later
 * `vm start` runs it with no lifetime until `vm extend` gives it one).
 */
export async function expireVm(vb: VmBase, name: string, now = () => Date.now()): Promise<void> {
  const removed = await vb.locks.run(name, async () => {
    const vm = vb.repo.find(name);
    if (!vm?.expiresAt || Date.parse(vm.expiresAt) > now()) return false;
    vb.ctx.log.info('vm lifetime ended', { vm: name, expiresAt: vm.expiresAt, onExpire: vm.onExpire });
    if (vm.onExpire === 'rm') {
      await removeVm(vb, vm, true);
      return true;
    }
    await stopVm(vb, vm, false);
    vb.repo.setExpiry(name, null, null);
    return false;
  });
  if (removed) await refreshSshConfig(vb);
}

/** `vm extend`: push the deadline out by `seconds` (from the deadline, or now when none or past). */
export async function extendVm(vb: VmBase, name: string, seconds: number, onExpire?: OnExpire): Promise<VmView> {
  const v = await vb.locks.run(name, async () => {
    const vm = vb.get(name);
    const expiresAt = extendedDeadline(vm.expiresAt, seconds);
    vb.repo.setExpiry(name, expiresAt, onExpire ?? vm.onExpire ?? vb.ctx.config.vm.onExpire);
    vb.ctx.log.info('vm lifetime extended', { vm: name, from: vm.expiresAt, to: expiresAt });
    return view(vb, vb.get(name), true);
  });
  vb.deadlinesChanged();
  return v;
}

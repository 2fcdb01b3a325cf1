import { BangerError, ErrorCode } from '../core/errors.js';
import type { RpcClient } from '../rpc/client.js';
import type { Params } from '../rpc/contract.js';
import type { Removed, Vm as VmInfo, VmDetail, VmPorts } from '../rpc/types.js';
import { operation } from './artifacts.js';
import { VmFiles } from './files.js';
import type { Operation, OperationOptions } from './operation.js';
import { VmProcess, execCollect, type ExecOptions, type ExecResult, type SpawnOptions } from './process.js';

/**
 * Options of `vms.create`: every `vm.create` param of the contract (rpc/contract.ts), except
 * that `initScript` is the script itself (text or bytes; the SDK sends it base64).
 */
export type CreateOptions = Omit<Params<'vm.create'>, 'initScript'> & { initScript?: string | Uint8Array } & OperationOptions;

/** `b.vms`: creating, finding and listing VMs. */
export class Vms {
  /** @internal */
  constructor(private readonly rpc: RpcClient) {}

  /**
   * Creates (and by default starts and waits for) a VM; resolves with its handle. Await it, or
   * iterate it for boot progress first. Aborting `signal` unwinds the create (nothing is left).
   */
  create(opts: CreateOptions): Operation<Vm> {
    const { onProgress: _p, signal: _s, initScript, ...params } = opts;
    const script =
      initScript === undefined ? undefined : Buffer.from(typeof initScript === 'string' ? Buffer.from(initScript, 'utf8') : initScript).toString('base64');
    return operation(opts, async (o) => new Vm(this.rpc, await this.rpc.request('vm.create', { ...params, initScript: script }, o)));
  }

  /** The handle of an existing VM; E_NOT_FOUND when there is none. */
  async get(name: string): Promise<Vm> {
    return new Vm(this.rpc, await this.rpc.request('vm.show', { name }));
  }

  /** Every VM the daemon knows (records, not handles: `get(name)` for a handle). */
  list(): Promise<VmInfo[]> {
    return this.rpc.request('vm.list', {});
  }
}

/** Options of `vm.logs`. */
export interface LogsOptions {
  /** Keep reading as the console grows, until the VM stops or `signal` aborts. */
  follow?: boolean;
  /** Byte offset to start at (default 0: the whole console log). */
  offset?: number;
  /** How often to look for more with `follow` (default 500 ms). */
  pollMs?: number;
  signal?: AbortSignal;
}

/**
 * A VM: run commands in it, move files, read its console, stop and remove it. The handle holds
 * the record it was made from (`info`); `refresh()` reads it again.
 *
 * `await using vm = …` removes the VM (force) when the scope ends; a VM you want to keep is
 * simply not declared with `using`.
 */
export class Vm implements AsyncDisposable {
  readonly name: string;
  readonly files: VmFiles;

  /** @internal use `b.vms.create()` / `b.vms.get()`. */
  constructor(
    private readonly rpc: RpcClient,
    public info: VmInfo,
  ) {
    this.name = info.name;
    this.files = new VmFiles(rpc, info.name);
  }

  /** Reads the VM's record again (state, ports, …). */
  async refresh(): Promise<VmDetail> {
    const d = await this.rpc.request('vm.show', { name: this.name });
    this.info = d;
    return d;
  }

  /**
   * Runs `cmd` (no shell) to completion through the guest agent and returns its exit code
   * and output. A non-zero exit is not an error; E_TIMEOUT, E_CANCELLED and E_TOO_LARGE are
   * (the command is killed first).
   */
  exec(cmd: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return execCollect(this.rpc.socketPath, this.name, cmd, opts);
  }

  /** Starts `cmd` and returns at once with its streams (`VmProcess`). */
  spawn(cmd: string, opts: SpawnOptions = {}): Promise<VmProcess> {
    return VmProcess.start(this.rpc.socketPath, this.name, cmd, opts);
  }

  /** What listens in the guest, and the published ports. */
  ports(): Promise<VmPorts> {
    return this.rpc.request('vm.ports', { name: this.name });
  }

  /** The console log, as text chunks; with `follow`, until the VM stops or `signal` aborts. */
  async *logs(opts: LogsOptions = {}): AsyncGenerator<string, void, undefined> {
    let offset = opts.offset ?? 0;
    for (;;) {
      if (opts.signal?.aborted) return;
      const r = await this.rpc.request('vm.logs', { name: this.name, offset });
      const grew = r.offset !== offset;
      offset = r.offset;
      if (r.data) yield r.data;
      if (grew) continue; // read until caught up (the daemon returns at most 1 MiB a call)
      if (!opts.follow || !r.running) return;
      const stopped = await sleep(opts.pollMs ?? 500, opts.signal);
      if (stopped) return;
    }
  }

  /** Starts a stopped VM (and waits until it is ready unless `wait: false`). */
  async start(opts: OperationOptions & { wait?: boolean } = {}): Promise<void> {
    await this.lifecycle(opts, (o) => this.rpc.request('vm.start', { names: [this.name], wait: opts.wait }, o));
  }

  /** Stops the VM (ACPI shutdown, then a kill after the configured timeout). */
  async stop(opts: OperationOptions = {}): Promise<void> {
    await this.lifecycle(opts, (o) => this.rpc.request('vm.stop', { names: [this.name] }, o));
  }

  /** Saves the VM's memory to disk and stops its VMM (docs/snapshots.md); `exec`, `start` or `resume` bring it back. */
  async pause(opts: OperationOptions = {}): Promise<void> {
    await this.lifecycle(opts, (o) => this.rpc.request('vm.pause', { names: [this.name] }, o));
  }

  /** Restores a paused VM. */
  async resume(opts: OperationOptions = {}): Promise<void> {
    await this.lifecycle(opts, (o) => this.rpc.request('vm.resume', { names: [this.name] }, o));
  }

  async restart(opts: OperationOptions = {}): Promise<void> {
    await this.lifecycle(opts, (o) => this.rpc.request('vm.restart', { names: [this.name] }, o));
  }

  /** Kills the VMM at once (default SIGKILL). */
  async kill(signal?: Params<'vm.kill'>['signal']): Promise<void> {
    const [v] = await this.rpc.request('vm.kill', { names: [this.name], signal });
    if (v) this.info = v;
  }

  /** Removes the VM, stopping it first (`force`, the default here). */
  rm(opts: OperationOptions & { force?: boolean } = {}): Operation<Removed> {
    return operation(opts, (o) => this.rpc.request('vm.rm', { names: [this.name], force: opts.force ?? true }, o));
  }

  /** `await using`: removes the VM; already gone is fine, as is a daemon already gone. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.rm();
    } catch (e) {
      if (e instanceof BangerError && (e.code === ErrorCode.NotFound || e.code === ErrorCode.Disconnected)) return;
      throw e;
    }
  }

  private async lifecycle(
    opts: OperationOptions,
    call: (o: { onProgress: NonNullable<OperationOptions['onProgress']>; signal?: AbortSignal }) => Promise<VmInfo[]>,
  ): Promise<void> {
    const [v] = await operation(opts, call);
    if (v) this.info = v;
  }
}

/** Resolves false after `ms`, true at once if `signal` aborts first. */
function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(true);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(false);
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      resolve(true);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

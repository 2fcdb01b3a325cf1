import { BangerError, ErrorCode } from '../core/errors.js';
import { BANGER_VERSION } from '../core/version.js';
import type { RpcClient } from '../rpc/client.js';
import { connectDaemon } from '../rpc/autostart.js';
import type { DaemonStatus } from '../rpc/types.js';
import { Images, Kernels } from './artifacts.js';
import { Vms } from './vms.js';

/** The SDK's version (the package's). */
export const SDK_VERSION = BANGER_VERSION;

export interface ConnectOptions {
  /**
   * The daemon's socket. Default: as the CLI finds it, BANGER_SOCKET, else
   * `$BANGER_ROOT/bangerd.sock` (`/var/lib/banger/bangerd.sock`).
   */
  socket?: string;
  /**
   * Start bangerd when nothing answers (only as root, as the CLI does). Default true; a
   * non-root caller gets E_NO_DAEMON with a hint saying how to start it.
   */
  autostart?: boolean;
  /** The environment the defaults are read from. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/**
 * A connection to bangerd, the SDK's entry point:
 *
 * ```ts
 * await using b = await Banger.connect();
 * await using vm = await b.vms.create({ image: 'debian-bookworm' });
 * const r = await vm.exec('uname', { args: ['-r'] });
 * ```
 *
 * One JSON-RPC connection carries every call; `vm.exec` / `spawn` / file copies open their own
 * short-lived stream connections. When the connection is lost (the daemon stopped), calls fail
 * with E_DISCONNECTED; connect again.
 */
export class Banger implements AsyncDisposable {
  readonly kernels: Kernels;
  readonly images: Images;
  readonly vms: Vms;

  private constructor(readonly rpc: RpcClient) {
    this.kernels = new Kernels(rpc);
    this.images = new Images(rpc);
    this.vms = new Vms(rpc);
  }

  /** Connect to bangerd (same socket discovery and autostart rules as the CLI). */
  static async connect(opts: ConnectOptions = {}): Promise<Banger> {
    return new Banger(await connectDaemon(opts.env ?? process.env, { socket: opts.socket, autostart: opts.autostart }));
  }

  /** The socket this client talks to. */
  get socket(): string {
    return this.rpc.socketPath;
  }

  /** True once the connection to the daemon is gone. */
  get closed(): boolean {
    return this.rpc.isClosed;
  }

  /** The SDK's version and the daemon's. */
  async version(): Promise<{ sdk: string; daemon: string }> {
    const s = await this.rpc.request('daemon.status', {});
    return { sdk: SDK_VERSION, daemon: s.version };
  }

  /** The daemon's status (version, pid, root, socket, uptime …). */
  status(): Promise<DaemonStatus> {
    return this.rpc.request('daemon.status', {});
  }

  /** Closes the connection. VMs keep running (dispose a VM handle to remove it). */
  close(): void {
    this.rpc.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
  }
}

/** E_NOT_FOUND-tolerant: true when `e` says the thing is already gone. */
export function isGone(e: unknown): boolean {
  return e instanceof BangerError && e.code === ErrorCode.NotFound;
}

import type { RpcClient } from '../rpc/client.js';
import type { MethodName, Params, Result } from '../rpc/contract.js';
import { connectDaemon } from '../rpc/autostart.js';
import type { ProgressEvent } from '../core/operation.js';
import { ProgressRenderer } from './progress.js';

/**
 * What every command handler gets: how to reach the daemon and how to print.
 * Handlers return data; `emit` prints it (JSON or a human rendering).
 */
export interface GlobalOptions {
  json?: boolean;
  debug?: boolean;
}

export class Cli {
  private client?: RpcClient;
  constructor(
    readonly opts: GlobalOptions,
    readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get json(): boolean {
    return !!this.opts.json;
  }

  /** Connect to bangerd; start it when none answers and we are root. */
  async connect(autostart = true): Promise<RpcClient> {
    if (this.client) return this.client;
    this.client = await connectDaemon(this.env, { autostart });
    return this.client;
  }

  /** One RPC call with progress on stderr and Ctrl-C cancelling the daemon's work. */
  async call<M extends MethodName>(method: M, params: Params<M>, opts: { progress?: boolean } = {}): Promise<Result<M>> {
    const client = await this.connect();
    const ac = new AbortController();
    const renderer = opts.progress ? new ProgressRenderer(process.stderr) : undefined;
    let interrupted = 0;
    const onSigint = () => {
      interrupted++;
      if (interrupted > 1) process.exit(130);
      renderer?.note('cancelling… (Ctrl-C again to quit without waiting for cleanup)');
      ac.abort();
    };
    process.on('SIGINT', onSigint);
    try {
      return await client.request(method, params, { signal: ac.signal, onProgress: (ev: ProgressEvent) => renderer?.update(ev) });
    } finally {
      process.off('SIGINT', onSigint);
      renderer?.stop();
    }
  }

  /** Print a result: one JSON document with --json, else the human rendering. */
  emit<T>(data: T, human: (data: T) => string): void {
    if (this.json) process.stdout.write(JSON.stringify(data, null, 2) + '\n');
    else {
      const text = human(data);
      if (text) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    }
  }

  close(): void {
    this.client?.close();
  }
}

/** Starting bangerd lives in rpc/autostart.ts (shared with the SDK); re-exported for the daemon commands. */
export { startDaemonProcess, waitForDaemon, type StartedDaemon } from '../rpc/autostart.js';

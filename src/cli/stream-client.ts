import { BangerError, ErrorCode } from '../core/errors.js';
import { layoutFromEnv } from '../core/paths.js';
import type { Params } from '../rpc/contract.js';
import { StreamCall as RpcStreamCall, type StreamMethod, type StreamSinks } from '../rpc/stream.js';
import type { Cli } from './context.js';

/**
 * The CLI's way to open a `vm.exec` / `vm.cpOut` / `vm.cpIn` stream: connect first (starting
 * the daemon when needed, saying how when it cannot), then the stream itself (rpc/stream.ts,
 * shared with the SDK).
 */
export type StreamCall = RpcStreamCall;
export type { StreamSinks };
export const StreamCall = {
  /** `signal`: the user gave up (a second SIGINT/SIGTERM), see rpc/stream.ts. */
  async open<M extends StreamMethod>(cli: Cli, method: M, params: Params<M>, sinks: StreamSinks, signal?: AbortSignal): Promise<RpcStreamCall> {
    if (signal?.aborted) throw new BangerError(ErrorCode.Cancelled, 'cancelled');
    await cli.connect(); // starts the daemon when needed, says how when it cannot
    return RpcStreamCall.open(layoutFromEnv(cli.env).socket, method, params, sinks, signal);
  },
};

/** The stage line of a paused VM that exec, cp or ssh resumed first (stderr). */
export function resumedLine(name: string, ms: number | undefined): void {
  if (ms !== undefined) process.stderr.write(`resume: vm ${name} was paused; resumed in ${(ms / 1000).toFixed(1)} s\n`);
}

/** A transfer's `open` (transfer/): the stream call, with the resume line when the VM was paused. */
export function transferOpener(c: Cli, vm: string) {
  return async <M extends StreamMethod>(method: M, params: Params<M>, sinks: StreamSinks) => {
    const call = await StreamCall.open(c, method, params, sinks);
    resumedLine(vm, call.reply.resumedMs);
    return call;
  };
}

/**
 * The context of one long operation (a pull, a create): how it is cancelled and where it
 * reports progress. Domain services take these; the RPC layer fills them from the connection
 * (`rpc/protocol.ts` re-exports both types, the wire format streams `ProgressEvent`s as
 * `progress` notifications).
 */

/** One progress report. Serialised as-is on the wire, so keep it plain JSON. */
export interface ProgressEvent {
  /** Stage name, e.g. "download", "extract", "layer", "mkfs", "boot". */
  stage: string;
  message?: string;
  /** Sub-task key, e.g. a layer digest. */
  key?: string;
  current?: number;
  total?: number;
  done?: boolean;
  /** Milliseconds since the operation started. */
  elapsedMs?: number;
}

/** What an operation receives from its caller: an abort signal and a progress sink. */
export interface OperationContext {
  /** Aborted when the caller cancels (Ctrl-C, a dropped connection). */
  signal: AbortSignal;
  /** Reports progress; never throws, may drop events. */
  progress(ev: ProgressEvent): void;
}

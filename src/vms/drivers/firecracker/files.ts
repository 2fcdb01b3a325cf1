import { join } from 'node:path';

/**
 * The Firecracker driver's files in a VM's directory (next to the shared ones of ../../files.ts):
 *
 *   firecracker.sock     API socket (--api-sock); Firecracker never removes it, banger does
 *   firecracker.pid      pid of the Firecracker process (written by banger at spawn)
 *   firecracker.log      Firecracker's own log (PUT /logger)
 *   firecracker.metrics  metrics, JSON lines (PUT /metrics)
 *   firecracker.stderr   the process's stderr (its error when it cannot start)
 *   vsock.sock           hybrid vsock UDS (PUT /vsock); host→guest via `CONNECT <port>`
 *   root.method          how root.ext4 was made: "reflink" or "sparse"
 */
export interface FcFiles {
  api: string;
  pid: string;
  log: string;
  metrics: string;
  stderr: string;
  vsock: string;
  rootMethod: string;
  /** What the process's argv must contain to be this VM's (default: `api`; jailed: its `--id`). */
  mark?: string;
}

export function fcFiles(vmDir: string): FcFiles {
  return {
    api: join(vmDir, 'firecracker.sock'),
    pid: join(vmDir, 'firecracker.pid'),
    log: join(vmDir, 'firecracker.log'),
    metrics: join(vmDir, 'firecracker.metrics'),
    stderr: join(vmDir, 'firecracker.stderr'),
    vsock: join(vmDir, 'vsock.sock'),
    rootMethod: join(vmDir, 'root.method'),
  };
}

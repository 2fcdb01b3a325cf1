import { request } from 'node:http';
import { BangerError, ErrorCode, errorMessage } from '../../../core/errors.js';
import type { FcRequest, InstanceInfo, SnapshotCreateParams, SnapshotLoadParams } from './api-types.js';
import { snapshotCreateRequest, snapshotLoadRequest, vmStateRequest } from './requests.js';

/**
 * Client of Firecracker's REST API: HTTP/1.1 over the Unix socket `--api-sock`.
 * Spec: https://github.com/firecracker-microvm/firecracker/blob/main/src/firecracker/swagger/firecracker.yaml
 *
 * Contract:
 * - Every request carries `Host: localhost` and an explicit `Content-Length` (Firecracker's
 *   micro_http reads a body only by Content-Length; chunked encoding is never used).
 * - 204 → undefined; 200 → the parsed JSON body; anything else → BangerError E_VMM whose
 *   message carries Firecracker's `fault_message` and whose `details.step` names the step.
 * - A socket that is absent, refuses, resets, answers garbage or does not answer within
 *   `timeoutMs` fails the call (E_VMM, or E_TIMEOUT), never the process: every socket error is
 *   an event turned into a rejection, and the socket is destroyed when the call settles.
 */
export class FirecrackerApi {
  constructor(
    readonly socketPath: string,
    private readonly opts: { timeoutMs?: number } = {},
  ) {}

  /** Sends one request and returns the JSON answer (200) or undefined (204). */
  call<T = unknown>(req: FcRequest, o: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<T | undefined> {
    const timeoutMs = o.timeoutMs ?? this.opts.timeoutMs ?? 10_000;
    const payload = req.body === undefined ? undefined : Buffer.from(JSON.stringify(req.body), 'utf8');
    const where = { step: req.step, method: req.method, path: req.path, socket: this.socketPath };
    return new Promise<T | undefined>((resolve, reject) => {
      let settled = false;
      const finish = (err: Error | undefined, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
        r.destroy();
        if (err) reject(err);
        else resolve(value);
      };
      const headers: Record<string, string | number> = { Host: 'localhost', Accept: 'application/json', 'Content-Length': payload?.length ?? 0 };
      if (payload) headers['Content-Type'] = 'application/json';
      const r = request({ socketPath: this.socketPath, method: req.method, path: req.path, headers, agent: false });
      const timer = setTimeout(
        () =>
          finish(
            new BangerError(ErrorCode.Timeout, `firecracker step ${req.step}: ${req.method} ${req.path} got no answer within ${timeoutMs} ms`, {
              details: where,
              hint: `is the firecracker process behind ${this.socketPath} hung?`,
            }),
          ),
        timeoutMs,
      );
      const onAbort = () => finish(new BangerError(ErrorCode.Cancelled, `firecracker step ${req.step} cancelled`, { details: where }));
      if (o.signal?.aborted) return onAbort();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      r.on('error', (e: NodeJS.ErrnoException) =>
        finish(
          new BangerError(ErrorCode.Vmm, `firecracker step ${req.step}: ${req.method} ${req.path}: ${e.code ?? ''} ${errorMessage(e)}`.replace(/\s+/g, ' '), {
            cause: e,
            details: { ...where, errno: e.code },
          }),
        ),
      );
      r.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > 1 << 20) finish(new BangerError(ErrorCode.Vmm, `firecracker step ${req.step}: answer larger than 1 MiB`, { details: where }));
          else chunks.push(d);
        });
        res.on('error', (e) => finish(new BangerError(ErrorCode.Vmm, `firecracker step ${req.step}: ${errorMessage(e)}`, { cause: e, details: where })));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            if (status >= 200 && status < 300)
              return finish(
                new BangerError(ErrorCode.Vmm, `firecracker step ${req.step}: answer is not JSON: ${text.slice(0, 200)}`, { details: { ...where, status } }),
              );
          }
          if (status === 204 || (status >= 200 && status < 300)) return finish(undefined, json as T | undefined);
          const fault =
            json && typeof json === 'object' && typeof (json as { fault_message?: unknown }).fault_message === 'string'
              ? (json as { fault_message: string }).fault_message
              : text.slice(0, 500) || `HTTP ${status}`;
          finish(
            new BangerError(ErrorCode.Vmm, `firecracker step ${req.step} failed: ${fault}`, {
              details: { ...where, status, faultMessage: fault },
              hint: "this is Firecracker's own error message; see the VM's firecracker.log",
            }),
          );
        });
      });
      r.end(payload);
    });
  }

  /** `GET /`: id, state ('Not started' | 'Running' | 'Paused') and version of the instance. */
  async instanceInfo(o: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<InstanceInfo> {
    const info = await this.call<InstanceInfo>({ step: 'describe-instance', method: 'GET', path: '/' }, o);
    if (!info || typeof info !== 'object' || typeof info.id !== 'string' || typeof info.state !== 'string') {
      throw new BangerError(ErrorCode.Vmm, `firecracker step describe-instance: GET / answered an unexpected body`, {
        details: { socket: this.socketPath, body: info },
      });
    }
    return info;
  }

  /** `PUT /actions SendCtrlAltDel`: the guest reboots (reboot=k), which ends Firecracker. */
  async sendCtrlAltDel(o: { timeoutMs?: number } = {}): Promise<void> {
    await this.call(
      { step: 'send-ctrl-alt-del', method: 'PUT', path: '/actions', definition: 'InstanceActionInfo', body: { action_type: 'SendCtrlAltDel' } },
      o,
    );
  }

  /** `PATCH /vm {state: Paused}`. */
  async pause(): Promise<void> {
    await this.call(vmStateRequest('Paused'));
  }

  /** `PATCH /vm {state: Resumed}`. */
  async resume(): Promise<void> {
    await this.call(vmStateRequest('Resumed'));
  }

  /** `PUT /snapshot/create` (the VM must be paused). Existing files are truncated by Firecracker. */
  async createSnapshot(p: SnapshotCreateParams, o: { timeoutMs?: number } = {}): Promise<void> {
    await this.call(snapshotCreateRequest(p), { timeoutMs: o.timeoutMs ?? 120_000 });
  }

  /** `PUT /snapshot/load` on a fresh process (only logger/metrics configured); Firecracker exits if it fails. */
  async loadSnapshot(p: SnapshotLoadParams, o: { timeoutMs?: number } = {}): Promise<void> {
    await this.call(snapshotLoadRequest(p), { timeoutMs: o.timeoutMs ?? 120_000 });
  }
}

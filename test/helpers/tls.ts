import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/** An HTTPS server of a test, on 127.0.0.1 with a self-signed certificate for 127.0.0.1. */
export interface TlsServer {
  server: Server;
  /** `https://127.0.0.1:PORT` */
  base: string;
  /** The certificate (PEM): a client trusts the server only when given it (NODE_EXTRA_CA_CERTS). */
  certPath: string;
  close(): Promise<void>;
}

/**
 * Makes a fresh self-signed certificate (EC P-256, valid one day, subjectAltName IP:127.0.0.1)
 * in `dir` with openssl and serves `handler` over HTTPS with it on a free port of 127.0.0.1.
 * Used by the HTTP client's redirect test and the kernel pull's TLS-verification test.
 */
export async function startTlsServer(dir: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<TlsServer> {
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  const r = spawnSync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-days',
    '1',
    '-keyout',
    keyPath,
    '-out',
    certPath,
  ]);
  if (r.status !== 0) throw new Error(`openssl req failed (${r.status}): ${r.stderr?.toString()}`);
  const server = createServer({ key: readFileSync(keyPath), cert: readFileSync(certPath) }, handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    base: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    certPath,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { httpRequest } from '../../src/images/registry/http.js';
import { isBangerError } from '../../src/core/errors.js';

/** Redirect handling against two local HTTP servers (two origins on 127.0.0.1). */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

test('redirects: Authorization kept on the same origin, dropped on a cross-origin hop', async () => {
  const seen: { path: string; headers: IncomingHttpHeaders }[] = [];
  const b = await serve((req, res) => {
    seen.push({ path: `B${req.url}`, headers: req.headers });
    res.end('from-b');
  });
  const a = await serve((req, res) => {
    seen.push({ path: `A${req.url}`, headers: req.headers });
    if (req.url === '/start') res.writeHead(307, { location: '/same' }).end();
    else if (req.url === '/same') res.writeHead(302, { location: `${b.base}/blob?sig=secret` }).end();
    else res.writeHead(404).end();
  });
  try {
    const res = await httpRequest(`${a.base}/start`, { headers: { authorization: 'Bearer tok' } });
    assert.equal(res.status, 200);
    assert.equal(await res.body.text(), 'from-b');
    assert.deepEqual(seen.map((s) => [s.path, s.headers.authorization]), [
      ['A/start', 'Bearer tok'],
      ['A/same', 'Bearer tok'],
      ['B/blob?sig=secret', undefined],
    ]);
  } finally {
    a.server.close();
    b.server.close();
  }
});

test('retries: 503 twice then success; a refused connection ends as E_HTTP after the retries', async () => {
  let n = 0;
  const s = await serve((_req, res) => {
    n++;
    if (n < 3) res.writeHead(503).end();
    else res.end('ok');
  });
  try {
    const res = await httpRequest(`${s.base}/x`, { backoffMs: 10 });
    assert.equal(res.status, 200);
    assert.equal(n, 3);
    await res.body.dump();
  } finally {
    s.server.close();
  }
  const dead = await serve(() => {});
  const url = `${dead.base}/x`;
  await new Promise((r) => dead.server.close(r));
  await assert.rejects(httpRequest(url, { backoffMs: 5, attempts: 2 }), (e: unknown) => isBangerError(e, 'E_HTTP') && /ECONNREFUSED/.test(e.message));
});

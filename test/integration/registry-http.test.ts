import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { HttpClient } from '../../src/core/http.js';
import { isBangerError } from '../../src/core/errors.js';

/** Redirects and retries of the one HTTP client, against local HTTP servers (two origins on 127.0.0.1). */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; base: string }> {
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` };
}

const http = new HttpClient({ backoffMs: 10 });

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
    else if (req.url === '/loop') res.writeHead(302, { location: '/loop' }).end();
    else res.writeHead(404).end();
  });
  try {
    const res = await http.open(`${a.base}/start`, { what: 'test', headers: { authorization: 'Bearer tok' } });
    assert.equal(res.status, 200);
    assert.equal((await res.readAll()).toString(), 'from-b');
    assert.deepEqual(
      seen.map((s) => [s.path, s.headers.authorization]),
      [
        ['A/start', 'Bearer tok'],
        ['A/same', 'Bearer tok'],
        ['B/blob?sig=secret', undefined],
      ],
    );
    await assert.rejects(http.open(`${a.base}/loop`, { what: 'test' }), (e: unknown) => isBangerError(e, 'E_HTTP') && /more than 5 redirects/.test(e.message));
  } finally {
    a.server.close();
    b.server.close();
  }
});

test('retries: 503 twice then success; 429 with a Retry-After past the bound is not retried; a refused connection ends as E_HTTP', async () => {
  let n = 0;
  const s = await serve((req, res) => {
    n++;
    if (req.url === '/429') res.writeHead(429, { 'retry-after': '3600' }).end();
    else if (req.url === '/404') res.writeHead(404).end();
    else if (n < 3) res.writeHead(503).end();
    else res.end('ok');
  });
  try {
    const res = await http.open(`${s.base}/x`, { what: 'test' });
    assert.equal(res.status, 200);
    assert.equal(n, 3);
    await res.readAll();
    n = 0;
    const r429 = await http.open(`${s.base}/429`, { what: 'test' });
    assert.equal(r429.status, 429);
    r429.close();
    assert.equal(n, 1, '429 with Retry-After 3600 s is answered at once, not slept on');
    n = 0;
    (await http.open(`${s.base}/404`, { what: 'test' })).close();
    assert.equal(n, 1, 'a 404 is final');
  } finally {
    s.server.close();
  }
  const dead = await serve(() => {});
  const url = `${dead.base}/x`;
  await new Promise((r) => dead.server.close(r));
  await assert.rejects(http.open(url, { what: 'test', attempts: 2 }), (e: unknown) => isBangerError(e, 'E_HTTP') && /ECONNREFUSED/.test(e.message));
});

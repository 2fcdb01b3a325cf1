import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join, normalize } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * A static HTTP file server for test fixtures (the Debian mirror subset): GET/HEAD of files
 * under `root`, 404 for anything else or outside it. `onRequest` sees each archive-relative path.
 * Run as a script (`node static-server.js ROOT HOST PORT`) it serves from inside a network
 * namespace (`ip netns exec NS node …`), prints "listening PORT" once bound, and logs each
 * request path on stdout.
 */
export function createStaticServer(root: string, onRequest?: (rel: string) => void): Server {
  return createServer((req, res) => {
    let rel: string;
    try {
      rel = normalize(decodeURIComponent((req.url ?? '/').split('?')[0]!)).replace(/^\/+/, '');
    } catch {
      res.writeHead(400).end('bad path');
      return;
    }
    onRequest?.(rel);
    const file = join(root, rel);
    if (rel.startsWith('..') || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': statSync(file).size, 'content-type': 'application/octet-stream' });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [root, host, port] = process.argv.slice(2);
  const server = createStaticServer(root!, (rel) => process.stdout.write(`GET ${rel}\n`));
  server.listen(Number(port ?? 0), host ?? '127.0.0.1', () => {
    const a = server.address();
    process.stdout.write(`listening ${typeof a === 'object' && a ? a.port : port}\n`);
  });
}

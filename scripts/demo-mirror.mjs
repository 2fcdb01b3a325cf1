#!/usr/bin/env node
// A local Debian package mirror subset for scripts/demo.sh on machines without docker.io:
// Debian's own signed InRelease, Packages.xz (+ by-hash) and the .debs a bare bookworm's
// first-boot install needs, fetched from the configured Debian mirror and verified
// (test/helpers/debian-archive-cache.ts), served at http://GATEWAY:PORT/debian where GATEWAY is
// banger's bridge address (config network.subnet, .1). The bridge appears during `vm create`,
// so the server binds as soon as the address exists. Prints the URL on stdout once the tree is
// ready, logs each request on stderr, and serves until SIGTERM/SIGINT.
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../dist/src/core/config.js';
import { parseSubnet } from '../dist/src/network/subnet.js';
import { buildMirrorTree } from '../dist/test/helpers/debian-mirror.js';
import { createStaticServer } from '../dist/test/helpers/static-server.js';

const gateway = parseSubnet(loadConfig().network.subnet).gateway;
const port = await new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const p = s.address().port;
    s.close(() => resolve(p));
  });
});
const { root, debs } = await buildMirrorTree({ install: true });
const web = mkdtempSync(join(tmpdir(), 'banger-demo-mirror-'));
symlinkSync(root, join(web, 'debian'));
let gets = 0;
const server = createStaticServer(web, (rel) => {
  gets++;
  if (rel.endsWith('InRelease') || rel.includes('Packages') || gets % 10 === 0) process.stderr.write(`  [package mirror] GET /${rel} (${gets} requests)\n`);
});
const stop = () => {
  server.close();
  rmSync(web, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdout.write(`http://${gateway}:${port}/debian ${debs.length}\n`);
const listen = () =>
  server
    .once('error', (e) => {
      if (e.code !== 'EADDRNOTAVAIL') throw e;
      setTimeout(listen, 300); // the bridge is not there yet
    })
    .listen(port, gateway);
listen();

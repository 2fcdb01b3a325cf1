import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { KernelService } from '../../src/kernels/service.js';
import { BundleServer, catalogDoc, goodBundle, missingToolsReason, storeSnapshot, testContext } from '../helpers/kernel-bundles.js';

const skip = missingToolsReason('tar', 'zstd', 'openssl');

test('an HTTPS bundle server with an untrusted (self-signed) certificate is refused: TLS is verified', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-tls-'));
  const catSrv = await new BundleServer().start();
  const { bundle } = goodBundle();
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
    join(dir, 'key.pem'),
    '-out',
    join(dir, 'cert.pem'),
  ]);
  assert.equal(r.status, 0, r.stderr?.toString());
  let hits = 0;
  const https = createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => {
    hits++;
    res.end(bundle);
  });
  await new Promise<void>((resolve) => https.listen(0, '127.0.0.1', resolve));
  const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}/k.tar.zst`;
  const doc = catalogDoc([{ name: 'tls', path: '/unused', bundle }], catSrv) as { entries: { tarballUrl: string }[] };
  doc.entries[0]!.tarballUrl = url;
  catSrv.set('/cat.json', JSON.stringify(doc));
  const ctx = testContext({ kernelCatalogs: [catSrv.url('/cat.json')] });
  try {
    const e = await new KernelService(ctx).pull('tls').then(
      () => assert.fail('an untrusted certificate was accepted'),
      (err) => err,
    );
    assert.ok(isBangerError(e, 'E_HTTP'), String(e));
    assert.ok(e.message.includes(url), e.message);
    assert.match(e.message, /certificate/i);
    assert.equal(hits, 0, 'no request was served over the untrusted connection');
    assert.deepEqual(storeSnapshot(ctx), []);
  } finally {
    ctx.cleanup();
    https.closeAllConnections();
    await new Promise((resolve) => https.close(resolve));
    await catSrv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isBangerError } from '../../src/core/errors.js';
import { KernelService } from '../../src/kernels/service.js';
import { BundleServer, catalogDoc, goodBundle, missingToolsReason, storeSnapshot, testContext } from '../helpers/kernel-bundles.js';
import { startTlsServer } from '../helpers/tls.js';

const skip = missingToolsReason('tar', 'zstd', 'openssl');

test('an HTTPS bundle server with an untrusted (self-signed) certificate is refused: TLS is verified', { skip }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'banger-tls-'));
  const catSrv = await new BundleServer().start();
  const { bundle } = goodBundle();
  let hits = 0;
  const tls = await startTlsServer(dir, (_req, res) => {
    hits++;
    res.end(bundle);
  });
  const url = `${tls.base}/k.tar.zst`;
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
    await tls.close();
    await catSrv.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

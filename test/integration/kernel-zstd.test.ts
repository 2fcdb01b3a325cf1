import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isDecompressError, zstdDecompressor } from '../../src/core/zstd.js';
import { ZSTD_WINDOW_LOG_MAX } from '../../src/kernels/extract.js';
import { missingToolsReason, sha256, zstd } from '../helpers/kernel-bundles.js';

const skip = missingToolsReason('zstd');

/** Decompress with banger's streaming decompressor (zlib), fed in small odd-sized chunks like a network would. */
async function streamDecompress(data: Buffer, chunk = 65_537, windowLogMax = ZSTD_WINDOW_LOG_MAX): Promise<Buffer> {
  const parts: Buffer[] = [];
  const chunks = function* () {
    for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
  };
  await pipeline(
    Readable.from(chunks()),
    zstdDecompressor(windowLogMax),
    new Writable({
      write(c: Buffer, _e, cb) {
        parts.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(parts);
}

function cliDecompress(data: Buffer, extra: string[] = []): Buffer {
  const r = spawnSync('zstd', ['-q', '-d', '-c', ...extra], { input: data, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd -d failed: ${r.stderr}`);
  return r.stdout;
}

test('zlib streaming output equals the zstd CLI for a normal frame', { skip }, async () => {
  const original = Buffer.concat([randomBytes(300_000), Buffer.alloc(500_000, 'k'), randomBytes(100_000)]);
  const compressed = zstd(original, { level: 3 });
  const ours = await streamDecompress(compressed);
  assert.equal(sha256(ours), sha256(cliDecompress(compressed)));
  assert.equal(sha256(ours), sha256(original));
});

test('zlib streaming output equals the zstd CLI for a long-window (--long=27) frame with far matches', { skip }, async () => {
  // 12 MiB of random data twice: the second copy only compresses with a window > 12 MiB.
  const block = randomBytes(12 * 1024 * 1024);
  const original = Buffer.concat([block, block]);
  const compressed = zstd(original, { long: 27, level: 1 });
  assert.ok(compressed.length < original.length * 0.6, `long-distance matching was used (${compressed.length} bytes)`);
  const ours = await streamDecompress(compressed);
  assert.equal(ours.length, original.length);
  assert.equal(sha256(ours), sha256(cliDecompress(compressed, ['--long=27'])));
  assert.equal(sha256(ours), sha256(original));
  // The window limit is applied: the same frame is refused when the limit is below its window.
  await assert.rejects(
    streamDecompress(compressed, 65_537, 20),
    (e: unknown) => isDecompressError(e) && /window/i.test(String((e as Error).message) + String((e as { code?: string }).code)),
  );
});

test('zlib zstd rejects a frame cut short and a corrupted frame', { skip }, async () => {
  const compressed = zstd(randomBytes(200_000));
  await assert.rejects(streamDecompress(compressed.subarray(0, compressed.length - 100)), (e: unknown) => isDecompressError(e));
  const bad = Buffer.from(compressed);
  bad.fill(0xff, 20, 2000);
  await assert.rejects(streamDecompress(bad), (e: unknown) => isDecompressError(e));
});

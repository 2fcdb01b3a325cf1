import { test } from 'node:test';
import assert from 'node:assert/strict';
import { F, FRAME_HDR, FrameDecoder, FrameError, MAX_PAYLOAD, encodeFrame, errorFrame, guestText, utf8Prefix, type Frame } from '../../src/core/agent-proto.js';

test('FrameDecoder: frames split anywhere, several in one chunk, a 64 KiB frame a byte at a time with linear work', () => {
  const frames = [
    encodeFrame(F.Stdout, 1, Buffer.alloc(MAX_PAYLOAD, 7)),
    encodeFrame(F.Exit, 1, '{"code":0}'),
    encodeFrame(F.Credit, 3, Buffer.from([0, 0, 1, 0])),
  ];
  const all = Buffer.concat(frames);
  const got: Frame[] = [];
  const d = new FrameDecoder();
  const concat = Buffer.concat;
  let joins = 0;
  Buffer.concat = ((list: readonly Uint8Array[], n?: number) => (joins++, concat(list, n))) as typeof Buffer.concat;
  try {
    for (let i = 0; i < all.length; i++) d.push(all.subarray(i, i + 1), (f) => got.push({ ...f, payload: Buffer.from(f.payload) }));
  } finally {
    Buffer.concat = concat;
  }
  assert.deepEqual(
    got.map((f) => [f.type, f.stream, f.payload.length]),
    [
      [F.Stdout, 1, MAX_PAYLOAD],
      [F.Exit, 1, 10],
      [F.Credit, 3, 4],
    ],
  );
  assert.ok(got[0]!.payload.every((b) => b === 7));
  // A join per frame (and one per header), not one per byte: a byte-at-a-time peer costs linear work.
  assert.ok(joins <= 2 * frames.length, `${joins} joins for ${all.length} one-byte chunks`);
  assert.equal(d.pending, 0);
  const again: number[] = [];
  d.push(all, (f) => again.push(f.type));
  assert.deepEqual(again, [F.Stdout, F.Exit, F.Credit]);
  const half = new FrameDecoder();
  half.push(frames[1]!.subarray(0, 6), () => assert.fail('no frame yet'));
  assert.equal(half.pending, 6);
});

test('FrameDecoder: a length out of range is a FrameError, before the frame is buffered', () => {
  const h = Buffer.alloc(FRAME_HDR);
  h.writeUInt32BE(5 + MAX_PAYLOAD + 1, 0);
  assert.throws(() => new FrameDecoder().push(h, () => {}), FrameError);
  const short = Buffer.alloc(FRAME_HDR);
  short.writeUInt32BE(4, 0);
  assert.throws(() => new FrameDecoder().push(short, () => {}), /frame length 4 out of range/);
});

test('utf8Prefix / errorFrame / guestText: cut by bytes at a character boundary, never throw, no control bytes', () => {
  const fffd = Buffer.alloc(65536, 0xff).toString('utf8'); // 65,536 U+FFFD: 196,608 bytes
  assert.equal(Buffer.byteLength(fffd), 196608);
  assert.throws(() => encodeFrame(F.Error, 1, fffd.slice(0, MAX_PAYLOAD)), RangeError, 'cutting by characters is not enough');
  const fr = errorFrame(1, fffd);
  assert.ok(fr.length <= FRAME_HDR + MAX_PAYLOAD);
  assert.equal(fr.readUInt32BE(0) - 5, 65535, 'cut at a character boundary (3-byte characters)');
  assert.equal(utf8Prefix('aé', 2).toString(), 'a', 'a 2-byte character is not split');
  assert.equal(utf8Prefix('abc', 10).toString(), 'abc');
  const t = guestText(Buffer.from('ok\x1b[2J\x07\n\u0085done'));
  assert.equal(t, 'ok\\x1b[2J\\x07\\x0a\\x85done');
  assert.equal(guestText(Buffer.alloc(5000, 0x61), 1024), 'a'.repeat(1024) + '…');
});

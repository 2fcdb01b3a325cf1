/**
 * Protocol v2 of banger's guest agent: binary frames multiplexing streams over one byte stream
 * (see src/guest/README.md, "Agent protocol v2"; the C side is src/guest/agent/mux.c).
 *
 *   frame = u32 BE length (of everything after it) | u8 type | u32 BE stream | payload
 *
 * The same frames carry a single exec/cp session between the CLI and bangerd after the
 * `vm.stream` RPC upgrades its connection (stream id 1 there).
 */
export const PROTO_VERSION = 2;
export const FRAME_HDR = 9;
export const MAX_PAYLOAD = 65536;
/** Bytes of data either side may send on a stream before the receiver returns credit. */
export const WINDOW = 262144;

export const F = {
  Hello: 1,
  Request: 2,
  Reply: 3,
  Stdin: 4,
  Stdout: 5,
  Stderr: 6,
  Eof: 7,
  Signal: 8,
  Resize: 9,
  Exit: 10,
  Credit: 11,
  Close: 12,
  Error: 15,
} as const;

export interface Frame {
  type: number;
  stream: number;
  payload: Buffer;
}

export function encodeFrame(type: number, stream: number, payload: Buffer | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length > MAX_PAYLOAD) throw new RangeError(`frame payload of ${body.length} bytes exceeds ${MAX_PAYLOAD}`);
  const b = Buffer.allocUnsafe(FRAME_HDR + body.length);
  b.writeUInt32BE(5 + body.length, 0);
  b.writeUInt8(type, 4);
  b.writeUInt32BE(stream >>> 0, 5);
  body.copy(b, FRAME_HDR);
  return b;
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
};

export class FrameError extends Error {}

/**
 * Splits a byte stream into frames. `push` throws FrameError on a length out of range; the
 * caller must then drop the connection (there is no way to resynchronise a byte stream).
 * Chunks are kept as they come and joined once per frame, so a peer that sends a frame a
 * byte at a time costs linear work, not quadratic; at most one frame plus one chunk is held.
 */
export class FrameDecoder {
  private parts: Buffer[] = [];
  private have = 0;
  push(chunk: Buffer, onFrame: (f: Frame) => void): void {
    if (chunk.length) {
      this.parts.push(chunk);
      this.have += chunk.length;
    }
    while (this.have >= 4) {
      const len = this.front(4).readUInt32BE(0);
      if (len < 5 || len > 5 + MAX_PAYLOAD) throw new FrameError(`frame length ${len} out of range`);
      if (this.have < 4 + len) return;
      const b = this.front(4 + len);
      const f = { type: b[4]!, stream: b.readUInt32BE(5), payload: b.subarray(FRAME_HDR, 4 + len) };
      this.drop(4 + len);
      onFrame(f);
    }
  }
  /** The first part, joined with the following ones when it is shorter than `n` (have >= n). */
  private front(n: number): Buffer {
    if (this.parts[0]!.length < n) this.parts = [Buffer.concat(this.parts, this.have)];
    return this.parts[0]!;
  }
  private drop(n: number): void {
    const first = this.parts[0]!;
    if (first.length === n) this.parts.shift();
    else this.parts[0] = first.subarray(n);
    this.have -= n;
  }
  get pending(): number {
    return this.have;
  }
}

/**
 * `text` as UTF-8 of at most `maxBytes` bytes, cut at a character boundary. Truncating a
 * string by characters is not enough: one U+FFFD (what each invalid byte a guest sends decodes
 * to) is 3 bytes, so 65,536 characters can be 196 KiB.
 */
export function utf8Prefix(text: string, maxBytes: number): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length <= maxBytes) return b;
  let end = maxBytes;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--; // do not split a multi-byte character
  return b.subarray(0, end);
}

/** An ERROR frame carrying `text`, cut to fit one frame: never throws, whatever the text. */
export function errorFrame(stream: number, text: string): Buffer {
  return encodeFrame(F.Error, stream, utf8Prefix(text, MAX_PAYLOAD));
}

/**
 * Text a guest sent (an ERROR frame, a refusal), made safe to log and print: at most
 * `maxBytes` bytes of it are decoded, and control characters (terminal escapes included)
 * become `\xNN`.
 */
export function guestText(data: Buffer | string, maxBytes = 1024): string {
  const b = typeof data === 'string' ? utf8Prefix(data, maxBytes) : data.subarray(0, maxBytes);
  const more = (typeof data === 'string' ? Buffer.byteLength(data) : data.length) > maxBytes ? '…' : '';
  return b.toString('utf8').replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`) + more;
}

/** Splits data into frames of at most MAX_PAYLOAD bytes. */
export function* chunks(data: Buffer, max = MAX_PAYLOAD): Generator<Buffer> {
  for (let i = 0; i < data.length; i += max) yield data.subarray(i, i + max);
}

/** What the agent's exit frame says. `code` is 128+N for a death by signal N. */
export interface ExitInfo {
  code: number;
  signal?: number;
}

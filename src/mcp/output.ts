/**
 * Output for a model: at most `max` bytes are kept, the first half and the last half, with a
 * note in between saying how many bytes were cut. Memory stays bounded by about `max` bytes
 * plus one chunk, however much the command prints.
 */
export class CappedOutput {
  private readonly head: Buffer[] = [];
  private headLen = 0;
  private readonly tail: Buffer[] = [];
  private tailLen = 0;
  total = 0;
  private readonly headMax: number;
  private readonly tailMax: number;

  constructor(readonly max: number) {
    this.headMax = Math.ceil(max / 2);
    this.tailMax = max - this.headMax;
  }

  push(chunk: Buffer): void {
    this.total += chunk.length;
    let d = chunk;
    if (this.headLen < this.headMax) {
      const take = Math.min(d.length, this.headMax - this.headLen);
      this.head.push(d.subarray(0, take));
      this.headLen += take;
      d = d.subarray(take);
    }
    if (!d.length) return;
    this.tail.push(d);
    this.tailLen += d.length;
    while (this.tail.length > 1 && this.tailLen - this.tail[0]!.length >= this.tailMax) this.tailLen -= this.tail.shift()!.length;
  }

  /** Bytes left out. */
  get cut(): number {
    return Math.max(0, this.total - this.max);
  }

  /** The kept text, with `[… N bytes cut …]` where bytes were left out. */
  text(): string {
    const head = Buffer.concat(this.head).toString('utf8');
    const all = Buffer.concat(this.tail);
    const tail = all.subarray(Math.max(0, all.length - this.tailMax)).toString('utf8');
    return this.cut > 0 ? `${head}\n[… ${this.cut} bytes cut (output limit ${this.max} bytes) …]\n${tail}` : head + tail;
  }
}

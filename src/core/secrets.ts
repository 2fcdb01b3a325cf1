import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { BangerError, ErrorCode } from './errors.js';

/**
 * Seals secrets stored in the database (registry passwords) with AES-256-GCM under a key that
 * only root can read (`<root>/secret.key`, 0600, 32 random bytes, made on first use). The
 * database is 0600 as well; the key keeps the passwords private also in copies of the database
 * (backups, bug reports) that leave the root. Sealed text: `banger-sealed:v1:` + base64 of
 * iv (12) | tag (16) | ciphertext. Text without that prefix is a legacy plain value.
 */
export const SEALED_PREFIX = 'banger-sealed:v1:';

export class SecretBox {
  private key?: Buffer;
  constructor(readonly keyFile: string) {}

  static isSealed(text: string): boolean {
    return text.startsWith(SEALED_PREFIX);
  }

  seal(plain: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.loadKey(), iv);
    const ct = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return SEALED_PREFIX + Buffer.concat([iv, c.getAuthTag(), ct]).toString('base64');
  }

  /** The plain text of a sealed value; a legacy plain value is returned as it is. */
  open(text: string): string {
    if (!SecretBox.isSealed(text)) return text;
    const raw = Buffer.from(text.slice(SEALED_PREFIX.length), 'base64');
    try {
      const d = createDecipheriv('aes-256-gcm', this.loadKey(), raw.subarray(0, 12));
      d.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8');
    } catch (e) {
      throw new BangerError(ErrorCode.Auth, `a stored secret cannot be opened with ${this.keyFile}`, {
        hint: "the key changed since it was stored: run 'banger registry login' again",
        cause: e,
      });
    }
  }

  private loadKey(): Buffer {
    if (this.key) return this.key;
    try {
      this.key = readKey(this.keyFile);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // Written in full to a temp file, then linked into place: never a half-written key,
      // and of two racing writers the second one reads the first one's key.
      const tmp = `${this.keyFile}.${process.pid}.tmp`;
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeSync(fd, randomBytes(32));
      } finally {
        closeSync(fd);
      }
      try {
        linkSync(tmp, this.keyFile);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      } finally {
        unlinkSync(tmp);
      }
      this.key = readKey(this.keyFile);
    }
    return this.key;
  }
}

function readKey(file: string): Buffer {
  const k = readFileSync(file);
  if (k.length !== 32)
    throw new BangerError(ErrorCode.Invalid, `${file} is not a 32-byte key`, { hint: 'remove it (stored registry logins must then be made again)' });
  return k;
}

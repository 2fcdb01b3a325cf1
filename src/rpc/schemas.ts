import { z } from 'zod';
import { parseSize } from '../core/fsutil.js';

/** Shared zod pieces of the RPC contract (`rpc/contract.ts`). */

/** A kernel, image or VM name: 1-63 characters, letters, digits, ".", "_", "-", not starting with a symbol. */
export const Name = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-zA-Z0-9][a-zA-Z0-9._-]*$/, 'must start with a letter or digit and contain only letters, digits, ".", "_" and "-"');

/**
 * A size: a positive whole number of bytes, or a string such as "512M", "8G", "1.5GiB"
 * (binary units). Parsed here and only here; handlers receive bytes.
 */
export const Size = z.union([z.number(), z.string().max(32)]).transform((v, ctx) => {
  let n: number;
  try {
    n = typeof v === 'number' ? v : parseSize(v);
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${(e as Error).message}` });
    return z.NEVER;
  }
  if (!Number.isInteger(n) || n <= 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: `must be a positive whole number of bytes (got ${JSON.stringify(v)})` });
    return z.NEVER;
  }
  return n;
});

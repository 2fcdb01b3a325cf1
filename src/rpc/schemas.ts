import { z } from 'zod';
import { durationSeconds } from '../core/duration.js';
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

/**
 * A duration: whole seconds, or a string such as "30s", "10m", "2h", "1d", "1h30m"
 * (`core/duration.ts`). Parsed here and only here; handlers receive seconds.
 */
export const Duration = z
  .union([
    z
      .number()
      .int()
      .positive()
      .max(366 * 86400),
    z.string().max(32),
  ])
  .transform((v, ctx) => {
    if (typeof v === 'number') return v;
    try {
      return durationSeconds('duration', v);
    } catch (e) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message.replace(/^duration: /, '') });
      return z.NEVER;
    }
  });

/** What happens to a VM when its lifetime (`ttl`) ends: stopped (disk kept) or removed. */
export const OnExpire = z.enum(['stop', 'rm']);

/** `--egress` (docs/network-policy.md). */
export const Egress = z.enum(['deny', 'nat', 'allow']);

/** `--allow` values: shape only here (CIDR[:PORT[/PROTO]] or HOSTNAME[:PORT]); the daemon parses and names a bad one (network/allow-spec.ts). */
export const AllowList = z
  .array(
    z
      .string()
      .min(1)
      .max(264)
      .regex(/^[0-9./:a-zA-Z-]+$/, 'must be CIDR[:PORT[/PROTO]] or HOSTNAME[:PORT], e.g. 192.0.2.0/24, 192.0.2.7:443 or pypi.org:443'),
  )
  .max(64);

/** A VM's vCPU count (`--vcpu`). */
export const Vcpu = z.number().int().min(1).max(32);

/** A VM's RAM in MiB (`--memory`). */
export const MemoryMiB = z
  .number()
  .int()
  .min(128)
  .max(1024 * 1024);

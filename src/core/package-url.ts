import { z } from 'zod';

/**
 * `--package-mirror` / `--package-proxy` (config firstBoot.packageMirror / packageProxy): where a
 * first boot's package install fetches from. The value travels on the seed disk as one line and
 * is written into the guest's package manager configuration, so it must be a plain http(s) URL:
 * no whitespace, quotes, backslashes, `$` or backticks (nothing a config file or shell could
 * read as more than a URL), and at most 2048 characters.
 */
export const PackageUrl = z
  .string()
  .max(2048, 'at most 2048 characters')
  .refine((s) => {
    if (/[\s"'`\\$<>{}|^]/.test(s) || [...s].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f)) return false;
    try {
      const u = new URL(s);
      return (u.protocol === 'http:' || u.protocol === 'https:') && !!u.hostname;
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL (e.g. http://10.0.0.1:8080/debian) without spaces, quotes or shell characters');

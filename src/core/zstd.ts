import { constants, createZstdDecompress, type ZstdDecompress } from 'node:zlib';

/**
 * A streaming zstd decompressor (Node's built-in `zlib`, Node >= 22.15): a Transform from
 * compressed to plain bytes that refuses frames needing a window larger than 2^windowLogMax
 * bytes (memory bound; zstd's own default limit is 2^27, 31 is the format's maximum). Errors
 * carry a `ZSTD_error_*` code (corrupt data) or `Z_BUF_ERROR` (input cut short).
 */
export function zstdDecompressor(windowLogMax: number): ZstdDecompress {
  return createZstdDecompress({ chunkSize: 256 * 1024, params: { [constants.ZSTD_d_windowLogMax]: windowLogMax } });
}

/** True for an error raised by zlib's zstd or gzip streams (corrupt or truncated data). */
export function isDecompressError(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && (code.startsWith('Z_') || code.startsWith('ZSTD_'));
}

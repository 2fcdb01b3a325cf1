import { z } from 'zod';
import { BangerError, ErrorCode } from '../../core/errors.js';
import type { ImageConfig } from '../../core/shapes/image.js';

/** Manifest and layer media types banger understands (OCI image spec v1.1, Docker schema 2). */
export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.DockerList, MediaType.OciManifest, MediaType.DockerManifest].join(', ');

export type Compression = 'none' | 'gzip' | 'zstd';

const LAYER_TYPES: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
};

/** Compression of a layer media type; throws E_REGISTRY for anything else. */
export function layerCompression(mediaType: string, digest: string): Compression {
  const c = LAYER_TYPES[mediaType];
  if (!c) {
    throw new BangerError(ErrorCode.Registry, `layer ${digest} has unsupported media type '${mediaType}'`, {
      hint: `banger applies tar layers (uncompressed, gzip or zstd): ${Object.keys(LAYER_TYPES).slice(0, 3).join(', ')}, …`,
    });
  }
  return c;
}

const DigestStr = z.string().regex(/^sha256:[a-f0-9]{64}$/, 'must be sha256:<64 hex>');
export const Descriptor = z.object({
  mediaType: z.string(),
  digest: DigestStr,
  size: z.number().int().nonnegative(),
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }).passthrough().optional(),
  annotations: z.record(z.string()).optional(),
});
export type Descriptor = z.infer<typeof Descriptor>;

const IndexSchema = z.object({ schemaVersion: z.literal(2), mediaType: z.string().optional(), manifests: z.array(Descriptor) });
const ManifestSchema = z.object({ schemaVersion: z.literal(2), mediaType: z.string().optional(), config: Descriptor, layers: z.array(Descriptor) });
export type ImageManifest = z.infer<typeof ManifestSchema>;
export type ImageIndex = z.infer<typeof IndexSchema>;

export type ParsedManifest = { kind: 'index'; mediaType: string; index: ImageIndex } | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

/** Parse a manifest body; its media type comes from the body, else the Content-Type header. */
export function parseManifest(body: Buffer, contentType: string | undefined, what: string): ParsedManifest {
  let json: { mediaType?: string; manifests?: unknown; layers?: unknown; schemaVersion?: unknown };
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new BangerError(ErrorCode.Registry, `${what}: manifest is not valid JSON`, { cause: e });
  }
  const mediaType = json.mediaType ?? (contentType ?? '').split(';')[0]!.trim() ?? '';
  const sv = json.schemaVersion;
  if (
    mediaType === MediaType.OciIndex ||
    mediaType === MediaType.DockerList ||
    (!json.mediaType && Array.isArray(json.manifests) && mediaType !== MediaType.OciManifest)
  ) {
    const r = IndexSchema.safeParse(json);
    if (!r.success) throw schemaError(what, r.error);
    return { kind: 'index', mediaType, index: r.data };
  }
  if (mediaType === MediaType.OciManifest || mediaType === MediaType.DockerManifest || (!json.mediaType && Array.isArray(json.layers) && sv === 2)) {
    const r = ManifestSchema.safeParse(json);
    if (!r.success) throw schemaError(what, r.error);
    return { kind: 'manifest', mediaType, manifest: r.data };
  }
  throw new BangerError(
    ErrorCode.Registry,
    `${what}: unsupported manifest media type '${mediaType || '(none)'}'${sv === 1 ? ' (Docker schema 1 is obsolete)' : ''}`,
    {
      hint: `banger understands ${MANIFEST_ACCEPT}`,
    },
  );
}

function schemaError(what: string, e: z.ZodError): BangerError {
  const i = e.issues[0]!;
  return new BangerError(ErrorCode.Registry, `${what}: malformed manifest: field '${i.path.join('.')}': ${i.message}`);
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', armhf: 'arm', armel: 'arm', i686: '386', i386: '386' };

/** Parse "linux/amd64", "linux/arm64/v8", "amd64". Throws E_INVALID naming --platform. */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  if (parts.length === 1 && parts[0]) return { os: 'linux', architecture: ARCH_ALIASES[parts[0]] ?? parts[0] };
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_-]+$/i.test(p))) {
    throw new BangerError(ErrorCode.Invalid, `--platform '${s}' is not OS/ARCH[/VARIANT]`, { hint: 'e.g. linux/amd64 or linux/arm64/v8' });
  }
  return { os: parts[0]!.toLowerCase(), architecture: ARCH_ALIASES[parts[1]!] ?? parts[1]!.toLowerCase(), variant: parts[2]?.toLowerCase() };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Pick the manifest for `want` from an index: os and architecture must match; a requested
 * variant must match (arm64 treats a missing variant as v8). Attestation entries
 * (unknown/unknown) are ignored. Throws E_PLATFORM listing the platforms that exist.
 */
export function selectPlatform(index: ImageIndex, want: Platform, what: string): Descriptor {
  const usable = index.manifests.filter((m) => m.platform && m.platform.os !== 'unknown');
  const norm = (v: string | undefined, arch: string) => v ?? (arch === 'arm64' ? 'v8' : undefined);
  const candidates = usable.filter(
    (m) => m.platform!.os === want.os && (ARCH_ALIASES[m.platform!.architecture] ?? m.platform!.architecture) === want.architecture,
  );
  const exact = want.variant ? candidates.filter((m) => norm(m.platform!.variant, want.architecture) === want.variant) : candidates;
  if (exact.length) return exact[0]!;
  const available = [...new Set(usable.map((m) => formatPlatform(m.platform as Platform)))];
  throw new BangerError(ErrorCode.Platform, `${what} has no image for platform ${formatPlatform(want)}; available: ${available.join(', ') || '(none)'}`, {
    hint: available.length ? `pass --platform ${available[0]}` : undefined,
    details: { available },
  });
}

/** The OCI image config fields banger keeps. */
export type { ImageConfig } from '../../core/shapes/image.js';

export function extractConfig(raw: unknown): { config: ImageConfig; os?: string; architecture?: string; variant?: string } {
  const j = (raw ?? {}) as { config?: Record<string, unknown>; os?: string; architecture?: string; variant?: string };
  const c = (j.config ?? {}) as { Env?: string[]; Entrypoint?: string[]; Cmd?: string[]; User?: string; WorkingDir?: string };
  const arr = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  return {
    config: {
      env: arr(c.Env),
      entrypoint: arr(c.Entrypoint),
      cmd: arr(c.Cmd),
      user: typeof c.User === 'string' ? c.User : '',
      workdir: typeof c.WorkingDir === 'string' ? c.WorkingDir : '',
    },
    os: j.os,
    architecture: j.architecture,
    variant: j.variant,
  };
}

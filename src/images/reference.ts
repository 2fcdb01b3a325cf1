import { BangerError, ErrorCode } from '../core/errors.js';

/**
 * An image reference normalised the way Docker does it:
 *   debian                      → docker.io/library/debian:latest
 *   user/app:1                  → docker.io/user/app:1
 *   localhost:5000/app          → localhost:5000/app:latest
 *   ghcr.io/o/r@sha256:…        → ghcr.io/o/r@sha256:… (no tag implied when a digest is given)
 *   index.docker.io/x           → docker.io/library/x:latest
 * `registry` is the name credentials and mirrors are keyed by; `apiHost` is where the
 * distribution API lives (registry-1.docker.io for docker.io).
 */
export interface ImageReference {
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
  /** The canonical string: registry/repository[:tag][@digest]. */
  canonical: string;
}

export const DOCKER_HUB = 'docker.io';
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$/;

function bad(ref: string, why: string): BangerError {
  return new BangerError(ErrorCode.Invalid, `invalid image reference '${ref}': ${why}`, {
    hint: 'use NAME[:TAG] or REGISTRY/REPO[:TAG][@sha256:DIGEST], e.g. debian:bookworm or localhost:5000/app@sha256:…',
  });
}

/** Parse and normalise `input`. Throws E_INVALID naming the reference and what is wrong. */
export function parseReference(input: string): ImageReference {
  const ref = input.trim();
  if (!ref) throw bad(input, 'empty');
  if (ref.length > 512) throw bad(ref.slice(0, 40) + '…', 'longer than 512 characters');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(ref, `digest '${digest}' is not sha256:<64 lowercase hex>`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(ref, `tag '${tag}' must be 1-128 of [A-Za-z0-9_.-] not starting with '.' or '-'`);
  }
  if (!rest) throw bad(ref, 'missing repository name');
  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      registry = first;
      repository = rest.slice(slash + 1);
      if (!DOMAIN.test(registry)) throw bad(ref, `registry host '${registry}' is not a valid host[:port]`);
      if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
    }
  }
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;
  if (!repository) throw bad(ref, 'missing repository name');
  for (const c of repository.split('/')) {
    if (!COMPONENT.test(c)) {
      throw bad(
        ref,
        c.toLowerCase() !== c
          ? `repository '${repository}' must be lowercase`
          : `repository component '${c}' is invalid (lowercase letters, digits, '.', '_', '-')`,
      );
    }
  }
  if (repository.length > 255) throw bad(ref, 'repository longer than 255 characters');
  if (!tag && !digest) tag = 'latest';
  const canonical = `${registry}/${repository}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  return { registry, repository, tag, digest, canonical };
}

/** Host (with port) serving the distribution API for `registry`. */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
}

/** Manifest reference to fetch: the digest when pinned, else the tag. */
export function manifestRef(r: ImageReference): string {
  return r.digest ?? r.tag ?? 'latest';
}

/**
 * Default local image name: last repository component + tag
 * (docker.io/library/debian:bookworm → debian-bookworm; digest-only → debian-<12 hex>).
 */
export function defaultImageName(r: ImageReference): string {
  const base = r.repository.split('/').pop()!;
  const suffix = r.tag ?? r.digest!.slice('sha256:'.length, 'sha256:'.length + 12);
  let name = `${base}-${suffix}`.replace(/[^a-zA-Z0-9._-]/g, '-');
  if (!/^[a-zA-Z0-9]/.test(name)) name = `i${name}`;
  return name.slice(0, 63);
}

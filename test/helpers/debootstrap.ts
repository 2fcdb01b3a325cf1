import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { OciLayout } from './oci.js';

/**
 * The Debian bookworm root filesystem used by end-to-end tests and the image-pull benchmark:
 * `debootstrap --variant=minbase --include=…` once per include list, cached as a tar under
 * /var/cache/banger-test (override: BANGER_TEST_CACHE), then turned into a cached OCI layout
 * (one gzip layer) that tests push into their own local registry.
 *
 * debootstrap talks to the Debian mirror (setup, like apt-get: BANGER_DEBIAN_MIRROR or
 * http://deb.debian.org/debian); tests themselves only talk to 127.0.0.1.
 * apt lists and caches are removed from the tree (as Debian's own container images do).
 */
/**
 * The Debian fixture most tests boot: minbase plus what banger's first-boot install adds to
 * docker.io's debian:bookworm (systemd-sysv, openssh-server, iproute2, ca-certificates), and
 * nothing kinder: no kmod, so a test cannot lean on the guest's modprobe that users' images lack.
 */
export const DEBIAN_INCLUDE = ['systemd-sysv', 'openssh-server', 'iproute2', 'ca-certificates'];
/** The same with kmod, for the test of the modules disk's `modprobe` (images that ship kmod). */
export const DEBIAN_KMOD_INCLUDE = [...DEBIAN_INCLUDE, 'kmod'];
export const CACHE_DIR = process.env.BANGER_TEST_CACHE || '/var/cache/banger-test';
export const DEBIAN_REPO = 'banger-test/debian';
export const DEBIAN_TAG = 'bookworm';
/**
 * The shape of docker.io/library/debian:bookworm: minbase with nothing added (no systemd, no
 * sshd, no iproute2), so a VM of it needs the first-boot install.
 */
export const DEBIAN_BARE_INCLUDE: string[] = [];
export const DEBIAN_BARE_REPO = 'banger-test/debian-bare';

function key(include: string[]): string {
  return createHash('sha256')
    .update(`bookworm minbase ${include.join(',')}`)
    .digest('hex')
    .slice(0, 12);
}

/**
 * Run a setup command; rejects when it fails, or when it runs longer than `timeoutMs` (default
 * 10 min: debootstrap from a slow mirror), killing it and naming the command that stalled.
 */
export function run(argv: string[], opts: { cwd?: string; stdout?: string; timeoutMs?: number } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      stdio: ['ignore', opts.stdout ? 'pipe' : 'ignore', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    const limit = opts.timeoutMs ?? 600_000;
    let stalled = false;
    const timer = setTimeout(() => {
      stalled = true;
      p.kill('SIGKILL');
    }, limit);
    let err = '';
    p.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    const out = opts.stdout ? createWriteStream(opts.stdout) : undefined;
    if (out) p.stdout!.pipe(out);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      const finish = () =>
        stalled
          ? reject(new Error(`test setup stalled: ${argv.join(' ')} ran longer than ${limit / 1000} s and was killed; stderr: ${err}`))
          : code === 0
            ? resolve()
            : reject(new Error(`${argv.join(' ')} failed (${code}): ${err}`));
      if (out) out.end(finish);
      else finish();
    });
  });
}

/** Path of the cached rootfs tar, building it with debootstrap when missing (~1 min). */
export async function ensureDebianRootfsTar(include = DEBIAN_INCLUDE): Promise<string> {
  mkdirSync(CACHE_DIR, { recursive: true });
  const tarPath = join(CACHE_DIR, `bookworm-minbase-${key(include)}.tar`);
  if (existsSync(tarPath)) return tarPath;
  const work = join(CACHE_DIR, `.debootstrap-${process.pid}-${Date.now()}`);
  try {
    const mirror = process.env.BANGER_DEBIAN_MIRROR || 'http://deb.debian.org/debian';
    await run(['debootstrap', '--variant=minbase', ...(include.length ? [`--include=${include.join(',')}`] : []), 'bookworm', join(work, 'rootfs'), mirror]);
    for (const d of ['var/lib/apt/lists', 'var/cache/apt']) {
      const p = join(work, 'rootfs', d);
      for (const n of existsSync(p) ? readdirSync(p) : []) if (n !== 'partial' && n !== 'archives') rmSync(join(p, n), { recursive: true, force: true });
    }
    rmSync(join(work, 'rootfs', 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
    const tmp = `${tarPath}.${process.pid}.tmp`;
    await run(['tar', '--create', '--format=posix', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--sort=name', '-C', join(work, 'rootfs'), '.'], {
      stdout: tmp,
    });
    renameSync(tmp, tarPath);
    return tarPath;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** A cached OCI layout (dir, tag) holding the Debian rootfs as one gzip layer. */
export async function ensureDebianOciLayout(include = DEBIAN_INCLUDE): Promise<{ dir: string; tag: string }> {
  const tarPath = await ensureDebianRootfsTar(include);
  const dir = join(CACHE_DIR, `bookworm-minbase-${key(include)}.oci`);
  if (existsSync(join(dir, 'index.json'))) return { dir, tag: DEBIAN_TAG };
  const tmpDir = `${dir}.${process.pid}.tmp`;
  rmSync(tmpDir, { recursive: true, force: true });
  const layout = new OciLayout(tmpDir);
  const gz = join(tmpDir, 'layer.tar.gz');
  await pipeline(createReadStream(tarPath), createGzip({ level: 6 }), createWriteStream(gz));
  const data = readFileSync(gz);
  rmSync(gz);
  const layer = layout.blob(data, 'application/vnd.oci.image.layer.v1.tar+gzip');
  const diffId = 'sha256:' + createHash('sha256').update(readFileSync(tarPath)).digest('hex');
  const img = layout.image([layer], {
    diffIds: [diffId],
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['bash'] },
  });
  layout.tag(img, DEBIAN_TAG);
  rmSync(dir, { recursive: true, force: true });
  renameSync(tmpDir, dir);
  return { dir, tag: DEBIAN_TAG };
}

/**
 * Push the Debian image into a local registry; returns the reference to pull
 * (e.g. "127.0.0.1:PORT/banger-test/debian:bookworm"). `registry` is host:port or a URL;
 * `push` lets callers with an authenticated registry push their own way.
 */
export async function ensureDebianImageInRegistry(
  registry: string,
  opts: { push?: (dir: string, tag: string, repoTag: string) => Promise<void>; include?: string[]; repo?: string } = {},
): Promise<string> {
  const host = registry.replace(/^https?:\/\//, '').replace(/\/+$/, '');
  const { dir, tag } = await ensureDebianOciLayout(opts.include);
  const repoTag = `${opts.repo ?? DEBIAN_REPO}:${DEBIAN_TAG}`;
  if (opts.push) await opts.push(dir, tag, repoTag);
  else await run(['skopeo', 'copy', '--quiet', '--dest-tls-verify=false', `oci:${dir}:${tag}`, `docker://${host}/${repoTag}`]);
  return `${host}/${repoTag}`;
}

/** Size of the cached rootfs tar (for reports). */
export function debianTarBytes(): number | undefined {
  const p = join(CACHE_DIR, `bookworm-minbase-${key(DEBIAN_INCLUDE)}.tar`);
  return existsSync(p) ? statSync(p).size : undefined;
}

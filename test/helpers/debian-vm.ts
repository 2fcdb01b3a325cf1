import assert from 'node:assert/strict';
import { isRoot, missingTools, TestDaemon } from './daemon.js';
import { debianMirrorUnavailable, startDebianMirror, type DebianMirror } from './debian-mirror.js';
import { ensureDebianImageInRegistry } from './debootstrap.js';
import { cleanupAll, createNetns, exposeInNetns } from './netns.js';
import { TestRegistry } from './registry.js';

/**
 * The Debian VM fixture of the e2e files that boot real Debian guests through the built CLI
 * (headline, image-prepare-error, sdk-mcp, vm, vm-exec, vm-instances, vm-publish): a local signed
 * Debian mirror (the kernel, and the first-boot install's packages with `install`), a local
 * registry holding the debootstrap image, a network namespace of the test, and a daemon in it
 * with `debian-cloud-amd64` and the image pulled through the CLI. The mirror and the registry
 * (host loopback) are exposed in the namespace at the same 127.0.0.1 URLs for the pulls only.
 * Each file keeps its own config, VMs and assertions; `stop()` undoes all of it.
 */

/** The tools every such file needs on the host (a file adds its own with `debianVmSkip(...)`). */
const TOOLS = ['qemu-system-x86_64', 'qemu-img', 'ip', 'nft', 'ssh', 'ssh-keygen', 'mkfs.ext4', 'debugfs', 'skopeo', 'debootstrap', 'docker-registry'];

/** Why a Debian VM file cannot run here (not root, a tool missing, no mirror cache), or undefined. */
export function debianVmSkip(...moreTools: string[]): string | undefined {
  if (!isRoot()) return 'needs root (namespaces, taps, nft, qemu)';
  return missingTools(...TOOLS, ...moreTools) ?? debianMirrorUnavailable();
}

export interface DebianVmOptions {
  /** Label of the daemon's network namespace (createNetns). */
  ns: string;
  /** The daemon's config.json. */
  config: Record<string, unknown>;
  /** The name the image is pulled as (default `debian-bookworm`). */
  imageName?: string;
  /** Packages debootstrap adds and the registry repository (default: the fixture with systemd and sshd, helpers/debootstrap.ts). */
  include?: string[];
  repo?: string;
  /** The mirror also serves the first-boot install's packages (startDebianMirror). */
  install?: boolean;
  /** Configs of further daemons (own roots, same namespace) that get the kernel and image too, in `more`. */
  more?: Record<string, unknown>[];
}

export interface DebianVm {
  mirror: DebianMirror;
  registry: TestRegistry;
  /** The image reference in the registry. */
  ref: string;
  /** The daemon's network namespace. */
  ns: string;
  /** The daemon, running, with the kernel and image pulled. */
  d: TestDaemon;
  /** The daemons of `options.more`, running, pulled likewise. */
  more: TestDaemon[];
  /**
   * Stops every daemon of the fixture (SIGTERM, or SIGKILL with `kill`) and any the CLI
   * autostarted, deletes the test's namespaces (cleanupAll: QEMU inside is killed), stops the
   * registry and the mirror and removes the daemons' roots.
   */
  stop(opts?: { kill?: boolean }): Promise<void>;
}

export async function startDebianVm(o: DebianVmOptions): Promise<DebianVm> {
  const registry = await TestRegistry.start();
  // the mirror and the image in the registry do not depend on each other
  const [m, r] = await Promise.allSettled([
    startDebianMirror({ install: o.install }),
    ensureDebianImageInRegistry(registry.host, { include: o.include, repo: o.repo }),
  ]);
  if (m.status === 'rejected' || r.status === 'rejected') {
    await registry.stop();
    if (m.status === 'fulfilled') await m.value.close();
    throw m.status === 'rejected' ? m.reason : (r as PromiseRejectedResult).reason;
  }
  const mirror = m.value;
  const ref = r.value;
  const ns = createNetns(o.ns);
  const daemons: TestDaemon[] = [];
  const fx: DebianVm = {
    mirror,
    registry,
    ref,
    ns,
    d: undefined as unknown as TestDaemon,
    more: [],
    async stop(opts = {}) {
      for (const d of daemons) await (opts.kill ? d.kill() : d.stop());
      for (const d of daemons) await d.stopAutostarted();
      cleanupAll();
      await registry.stop();
      await mirror.close();
      for (const d of daemons) await d.cleanup(); // the roots (each daemon is stopped by now)
    },
  };
  try {
    const exposed = [await exposeInNetns(ns, mirror.port), await exposeInNetns(ns, registry.port)];
    for (const config of [o.config, ...(o.more ?? [])]) {
      const d = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config });
      daemons.push(d);
      await d.start();
      const k = await d.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
      assert.equal(k.code, 0, k.stderr);
      const image = o.imageName ?? 'debian-bookworm';
      const i = await d.cli(['image', 'pull', ref, '--name', image, '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
      assert.equal(i.code, 0, i.stderr);
    }
    for (const stop of exposed) stop();
  } catch (e) {
    // `after` never sees a fixture that failed to start: undo it here
    await fx.stop({ kill: true });
    throw e;
  }
  fx.d = daemons[0]!;
  fx.more = daemons.slice(1);
  return fx;
}

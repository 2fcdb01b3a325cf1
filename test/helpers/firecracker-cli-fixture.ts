import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from './daemon.js';
import { fakeElfVmlinux } from './fake-vmlinux.js';
import { makeStandin } from './firecracker-standin/index.js';
import { cleanupAll, createNetns } from './netns.js';
import { makeTar } from './oci.js';

/**
 * What the Firecracker CLI tests share: a daemon in its own network namespace whose
 * `binaries.firecracker` is the test stand-in, a fake ELF kernel `fck` and a tiny image `fcimg`
 * imported through the built CLI. `config` adds to the daemon's config (the jailer test adds its
 * jailer). Call `stop()` in `after`.
 */
export interface FirecrackerCliFixture {
  d: TestDaemon;
  ns: string;
  work: string;
  standin: ReturnType<typeof makeStandin>;
  stop(): Promise<void>;
}

export async function startFirecrackerCli(o: {
  tag: string;
  bridge: string;
  subnet: string;
  config?: Record<string, unknown>;
  standin?: ReturnType<typeof makeStandin>;
  /** The daemon sees the host's cgroup hierarchies (TestDaemon hostCgroups): VMs get cgroup limits. */
  hostCgroups?: boolean;
}): Promise<FirecrackerCliFixture> {
  const standin = o.standin ?? makeStandin();
  const work = mkdtempSync(join(tmpdir(), `banger-${o.tag}-`));
  const ns = createNetns(o.tag);
  const d = new TestDaemon({
    netns: ns,
    hostCgroups: o.hostCgroups,
    config: { binaries: { firecracker: standin.binary }, vm: { stopTimeoutSeconds: 3 }, network: { bridge: o.bridge, subnet: o.subnet }, ...o.config },
  });
  const stop = async () => {
    await d.cleanup();
    cleanupAll();
    standin.remove();
    rmSync(work, { recursive: true, force: true });
  };
  try {
    await d.start();
    writeFileSync(join(work, 'vmlinux'), fakeElfVmlinux({ release: '6.1.0-fc' }));
    const k = await d.cli(['kernel', 'import', 'fck', '--vmlinux', join(work, 'vmlinux'), '--distro', 'generic']);
    assert.equal(k.code, 0, k.stderr);
    writeFileSync(
      join(work, 'rootfs.tar'),
      makeTar([
        { path: 'etc/', type: 'dir' },
        { path: 'etc/hostname', data: 'fc\n' },
      ]),
    );
    const i = await d.cli(['image', 'import', 'fcimg', '--rootfs-tar', join(work, 'rootfs.tar'), '--kernel-ref', 'fck', '--size', '64M'], {
      timeoutMs: 180_000,
    });
    assert.equal(i.code, 0, i.stderr);
  } catch (e) {
    await stop();
    throw e;
  }
  return { d, ns, work, standin, stop };
}

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { TestDaemon, isRoot, missingTools } from '../helpers/daemon.js';
import { debianMirrorUnavailable, startDebianMirror } from '../helpers/debian-mirror.js';
import { createNetns, deleteNetns, exposeInNetns } from '../helpers/netns.js';
import { debianSystemdTree, debootstrapUnavailable } from '../helpers/guest-fixtures.js';

/**
 * The reference session through the built CLI, guest side: a Debian bookworm image (debootstrap,
 * systemd + openssh-server) imported with `image import` (which runs the guest injection), the
 * Debian kernel pulled from a local signed mirror, `vm create` on QEMU (TCG) and
 *   banger vm ssh testbox -- "id; uname -r; systemctl is-active banger-vsock-agent"
 * plus `vm ports` answered by the agent. One daemon, in a network namespace this test creates;
 * the mirror on the host's 127.0.0.1 is exposed into it at the same URL.
 */
const skip = !isRoot()
  ? 'needs root (network namespace, bridge, tap)'
  : (missingTools('qemu-system-x86_64', 'qemu-img', 'mkfs.ext4', 'ip', 'ssh', 'ssh-keygen') ??
    (!existsSync('/dev/net/tun') ? 'no /dev/net/tun' : (debianMirrorUnavailable() ?? debootstrapUnavailable())));

let inNs: TestDaemon | undefined;
let ns: string | undefined;

before(async () => {
  if (skip) return;
  ns = createNetns('gsess');
  const mirror = await startDebianMirror();
  try {
    const stopExpose = await exposeInNetns(ns, mirror.port);
    inNs = new TestDaemon({ netns: ns, env: { BANGER_DEBIAN_MIRROR: mirror.url }, config: { vm: { sshTimeoutSeconds: 420 } } });
    await inNs.start();
    const k = await inNs.cli(['kernel', 'pull', 'debian-cloud-amd64'], { timeoutMs: 300_000 });
    assert.equal(k.code, 0, `kernel pull: ${k.stderr}`);
    stopExpose();
  } finally {
    await mirror.close();
  }
  const rootfs = await debianSystemdTree();
  const i = await inNs.cli(['image', 'import', 'debian-bookworm', '--rootfs-dir', rootfs, '--kernel-ref', 'debian-cloud-amd64'], { timeoutMs: 600_000 });
  assert.equal(i.code, 0, `image import: ${i.stderr}`);
}, { timeout: 900_000 });

after(async () => {
  if (inNs) {
    await inNs.cli(['vm', 'rm', '-f', 'testbox'], { timeoutMs: 120_000 }).catch(() => undefined);
    await inNs.cleanup();
  }
  if (ns) deleteNetns(ns);
}, { timeout: 120_000 });

test('vm ssh testbox -- "id; uname -r; systemctl is-active banger-vsock-agent" and vm ports through the agent', { skip, timeout: 1_200_000 }, async () => {
  const c = await inNs!.cli(['vm', 'create', '--image', 'debian-bookworm', '--name', 'testbox'], { timeoutMs: 600_000 });
  assert.equal(c.code, 0, `vm create: ${c.stderr}`);
  assert.match(c.stderr, /agent.*healthy/i, `create reports the agent healthy:\n${c.stderr}`);

  const s = await inNs!.cli(['vm', 'ssh', 'testbox', '--', 'id; uname -r; systemctl is-active banger-vsock-agent'], { timeoutMs: 120_000 });
  assert.equal(s.code, 0, s.stderr);
  const lines = s.stdout.trim().split('\n');
  assert.match(lines[0]!, /^uid=0\(root\) gid=0\(root\)/);
  assert.match(lines[1]!, /cloud-amd64$/);
  assert.equal(lines[2], 'active');

  const p = await inNs!.json(['vm', 'ports', 'testbox'], { timeoutMs: 60_000 });
  assert.equal(p.agent, true);
  assert.ok(p.ports.some((x: any) => x.proto === 'tcp' && x.port === 22), JSON.stringify(p.ports));

  // the remote exit code comes back through vm ssh
  const f = await inNs!.cli(['vm', 'ssh', 'testbox', '--', 'systemctl is-active no-such-unit-here'], { timeoutMs: 60_000 });
  assert.notEqual(f.code, 0);
});

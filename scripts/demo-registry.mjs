#!/usr/bin/env node
// Serves a Debian bookworm image from a local docker-registry on 127.0.0.1, for machines that
// cannot reach docker.io. Default: debootstrap --variant=minbase + systemd, openssh-server.
// --bare: minbase with nothing added (no systemd, no sshd, no iproute2), the shape of
// docker.io/library/debian:bookworm. Prints the image reference on stdout once it is pushed,
// then keeps serving until SIGTERM/SIGINT.
import { TestRegistry } from '../dist/test/helpers/registry.js';
import { DEBIAN_BARE_INCLUDE, DEBIAN_BARE_REPO, ensureDebianImageInRegistry } from '../dist/test/helpers/debootstrap.js';

const bare = process.argv.includes('--bare');

const reg = await TestRegistry.start({ auth: 'none' });
const stop = async () => {
  await reg.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
try {
  const ref = await ensureDebianImageInRegistry(reg.host, bare ? { include: DEBIAN_BARE_INCLUDE, repo: DEBIAN_BARE_REPO } : {});
  process.stdout.write(ref + '\n');
} catch (e) {
  process.stderr.write(`demo-registry: ${e instanceof Error ? e.message : e}\n`);
  await reg.stop();
  process.exit(1);
}
setInterval(() => {}, 1 << 30);

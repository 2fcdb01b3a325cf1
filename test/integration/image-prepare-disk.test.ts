import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { exec } from '../../src/core/exec.js';
import { FIRST_BOOT_PATH } from '../../src/guest/constants.js';
import { firstBootScript, rootfsNeedsInstall, writeFirstBoot } from '../../src/guest/prepare-disk.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * The guest-side facts of a prepare, on real ext4 images made with mkfs.ext4 -d (no mount):
 * which images need the first-boot install (so are prepared), and the builder disk's
 * first-boot script written with debugfs (before the builder boots: a disk banger made).
 */
const skip = !isRoot() ? 'needs root (mkfs.ext4 -d keeps owners)' : missingTools('mkfs.ext4', 'debugfs');

function ext4(files: Record<string, string | { link: string }>): { path: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'banger-prepdisk-'));
  const tree = join(dir, 'tree');
  mkdirSync(tree);
  for (const [p, v] of Object.entries(files)) {
    mkdirSync(dirname(join(tree, p)), { recursive: true });
    if (typeof v === 'string') writeFileSync(join(tree, p), v);
    else symlinkSync(v.link, join(tree, p));
  }
  return { path: join(dir, 'rootfs.ext4'), dir };
}

async function build(files: Record<string, string | { link: string }>): Promise<{ path: string; dir: string }> {
  const img = ext4(files);
  await exec(['mkfs.ext4', '-q', '-F', '-b', '4096', '-d', join(img.dir, 'tree'), img.path, '16M']);
  return img;
}

const SCRIPT = { [FIRST_BOOT_PATH.slice(1)]: '#!/bin/sh\n' };
const DEBIAN_OS = { 'usr/lib/os-release': 'ID=debian\n', 'etc/os-release': { link: '../usr/lib/os-release' } };

test('rootfsNeedsInstall: a bare Debian (script, os-release, no systemd/sshd) needs it; one with systemd + ssh.service, an Alpine with OpenRC + sshd, an image without the script or without os-release do not', {
  skip,
}, async () => {
  const cases: [string, Record<string, string | { link: string }>, boolean][] = [
    ['bare debian', { ...SCRIPT, ...DEBIAN_OS }, true],
    ['systemd but no SSH unit', { ...SCRIPT, ...DEBIAN_OS, 'usr/lib/systemd/systemd': 'x' }, true],
    [
      'systemd + ssh.service (merged /usr, /lib a link)',
      { ...SCRIPT, ...DEBIAN_OS, lib: { link: 'usr/lib' }, 'usr/lib/systemd/systemd': 'x', 'usr/lib/systemd/system/ssh.service': '[Service]\n' },
      false,
    ],
    [
      'alpine with openrc + sshd',
      { ...SCRIPT, 'etc/os-release': 'ID=alpine\n', 'sbin/openrc': 'x', 'etc/alpine-release': '3.20.0\n', 'etc/init.d/sshd': 'x' },
      false,
    ],
    ['no first-boot script', { ...DEBIAN_OS }, false],
    ['no os-release', { ...SCRIPT, 'etc/hostname': 'x\n' }, false],
  ];
  for (const [what, files, want] of cases) {
    const img = await build(files);
    try {
      assert.equal(await rootfsNeedsInstall(exec, img.path), want, what);
    } finally {
      rmSync(img.dir, { recursive: true, force: true });
    }
  }
});

test("writeFirstBoot puts this build's script in the builder's disk (0755 root), replacing the image's", { skip }, async () => {
  const img = await build({ ...SCRIPT, ...DEBIAN_OS });
  try {
    const script = await firstBootScript();
    assert.match(script.sha256, /^[0-9a-f]{64}$/);
    assert.ok(script.data.toString().includes('prepare_image'), 'the script has the prepare mode');
    await writeFirstBoot(exec, img.path, script, img.dir);
    const back = await exec(['debugfs', '-R', `cat ${FIRST_BOOT_PATH}`, img.path], { binary: true });
    assert.ok(back.stdoutBuffer.equals(readFileSync(script.path)));
    const st = await exec(['debugfs', '-R', `stat ${FIRST_BOOT_PATH}`, img.path]);
    assert.match(st.stdout, /Mode: +0755/);
    assert.match(st.stdout, /User: +0 +Group: +0/);
    const fsck = await exec(['e2fsck', '-fn', img.path], { allowFailure: true });
    assert.equal(fsck.exitCode, 0, fsck.stdout + fsck.stderr);
  } finally {
    rmSync(img.dir, { recursive: true, force: true });
  }
});

test('writeFirstBoot refuses a disk without /usr/local/libexec (nothing would boot it)', { skip }, async () => {
  const img = await build({ ...DEBIAN_OS });
  try {
    await assert.rejects(writeFirstBoot(exec, img.path, await firstBootScript(), img.dir), /cannot write \/usr\/local\/libexec\/banger-first-boot/);
  } finally {
    rmSync(img.dir, { recursive: true, force: true });
  }
});

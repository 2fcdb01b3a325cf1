import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { injectGuestFiles, FIRST_BOOT_PATH } from '../../src/guest/inject.js';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { isRoot, missingTools } from '../helpers/daemon.js';

/**
 * banger-first-boot, run for real without a VM: a busybox-static root filesystem with banger's
 * guest files injected, a fake /etc/os-release per distro and stub package managers that
 * record their argv (and "install" stub systemd/sshd files), executed as PID 1 of a new PID,
 * mount and UTS namespace under chroot. BANGER_FIRST_BOOT_TEST=1 takes the seed from a
 * directory and prints the final exec instead of running it; the mounts of /proc /sys /dev
 * /run really happen (inside the private mount namespace).
 */
const BUSYBOX = '/bin/busybox';
const skip = !isRoot() ? 'needs root (unshare, chroot)' : (missingTools('unshare', 'chroot') ?? (existsSync(BUSYBOX) ? undefined : 'busybox-static missing'));

const HOST_KEY = '-----BEGIN OPENSSH PRIVATE KEY-----\nfake-test-key\n-----END OPENSSH PRIVATE KEY-----\n';
const HOST_PUB = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFake root@testbox\n';
const AUTH = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBangerClientKey banger\n';

/** Stub package manager: records argv (+ whether policy-rc.d blocks daemons), then "installs". */
function stub(installs: string): string {
  return `#!/bin/sh
prc=none
[ -x /usr/sbin/policy-rc.d ] && { /usr/sbin/policy-rc.d; prc=$?; }
uio=no
grep -q -- '"--force-unsafe-io"' /etc/apt/apt.conf.d/00banger-first-boot 2>/dev/null && uio=yes
echo "$(basename "$0") $* [DEBIAN_FRONTEND=\${DEBIAN_FRONTEND:-} policy-rc.d=$prc unsafe-io=$uio]" >> /pm.log
[ -n "\${http_proxy:-}" ] && echo "  env http_proxy=$http_proxy https_proxy=\${https_proxy:-}" >> /pm.log
for a in "$@"; do
  case "$a" in
    *=/var/lib/banger/first-boot-pkg/*) f="\${a#*=}" ;;
    /var/lib/banger/first-boot-pkg/*) f="$a" ;;
    *) continue ;;
  esac
  [ -f "$f" ] && sed "s|^|  file $f: |" "$f" >> /pm.log
  [ -d "$f" ] && for x in "$f"/*; do [ -f "$x" ] && sed "s|^|  file $x: |" "$x" >> /pm.log; done
done
[ -n "\${STUB_FAIL:-}" ] && exit 100
case " $* " in
  *" install "*|*" add "*|*" -Sy "*) ${installs} ;;
esac
exit 0
`;
}
const SYSTEMD_INSTALL = 'mkdir -p /lib/systemd/system && printf "#!/bin/sh\\n" > /lib/systemd/systemd && chmod 755 /lib/systemd/systemd';
const PMS: Record<string, string> = {
  'apt-get': `${SYSTEMD_INSTALL} && echo "[Service]" > /lib/systemd/system/ssh.service`,
  dnf: `mkdir -p /usr/lib/systemd/system && printf "#!/bin/sh\\n" > /usr/lib/systemd/systemd && chmod 755 /usr/lib/systemd/systemd && echo "[Service]" > /usr/lib/systemd/system/sshd.service`,
  pacman: `${SYSTEMD_INSTALL} && echo "[Service]" > /lib/systemd/system/sshd.service`,
  zypper: `${SYSTEMD_INSTALL} && echo "[Service]" > /lib/systemd/system/sshd.service`,
  apk: 'mkdir -p /etc/init.d && printf "#!/bin/sh\\n" > /sbin/openrc && chmod 755 /sbin/openrc && printf "#!/sbin/openrc-run\\n" > /etc/init.d/sshd && chmod 755 /etc/init.d/sshd',
};

interface Guest {
  root: string;
  run(env?: Record<string, string>): { code: number; stdout: string; stderr: string };
  read(p: string): string;
  mode(p: string): number;
  has(p: string): boolean;
}

async function makeGuest(osRelease: string | undefined, seed: Record<string, string> = defaultSeed()): Promise<Guest> {
  const root = mkdtempSync(join(tmpdir(), 'banger-firstboot-'));
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc/apt/apt.conf.d', 'root', 'tmp', 'var', 'proc', 'sys', 'dev', 'run'])
    mkdirSync(join(root, d), { recursive: true });
  copyFileSync(BUSYBOX, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  const applets = spawnSync(BUSYBOX, ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  for (const a of applets) if (a !== 'busybox') symlinkSync('busybox', join(root, 'bin', a));
  if (osRelease !== undefined) writeFileSync(join(root, 'etc/os-release'), osRelease);
  writeFileSync(join(root, 'etc/hosts'), '# image hosts\n10.9.9.9 keepme\n');
  for (const [pm, installs] of Object.entries(PMS)) {
    writeFileSync(join(root, 'usr/bin', pm), stub(installs));
    chmodSync(join(root, 'usr/bin', pm), 0o755);
  }
  for (const [p, content] of Object.entries(seed)) {
    mkdirSync(join(root, 'seed', p, '..'), { recursive: true });
    writeFileSync(join(root, 'seed', p), content);
  }
  await injectGuestFiles(root, { exec, log: nullLogger });
  return {
    root,
    run(env = {}) {
      const r = spawnSync('unshare', ['--mount', '--pid', '--uts', '--fork', 'chroot', root, FIRST_BOOT_PATH], {
        encoding: 'utf8',
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', BANGER_FIRST_BOOT_TEST: '1', BANGER_SEED_DIR: '/seed', ...env },
        timeout: 60000,
      });
      return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
    },
    read: (p) => readFileSync(join(root, p), 'utf8'),
    mode: (p) => statSync(join(root, p)).mode & 0o7777,
    has: (p) => existsSync(join(root, p)),
  };
}

function defaultSeed(): Record<string, string> {
  return {
    'ssh/ssh_host_ed25519_key': HOST_KEY,
    'ssh/ssh_host_ed25519_key.pub': HOST_PUB,
    'ssh/authorized_keys': AUTH,
    hostname: 'testbox\n',
    'resolv.conf': 'nameserver 10.0.0.1\n',
    'network.env': 'BANGER_IP=10.0.0.2\nBANGER_PREFIX=24\nBANGER_GATEWAY=10.0.0.1\nBANGER_IFACE=eth0\nBANGER_DNS="10.0.0.1"\nBANGER_VM_NAME=testbox\n',
    version: '1\n',
  };
}

function pmLog(g: Guest): string[] {
  return g.has('pm.log') ? g.read('pm.log').trim().split('\n') : [];
}

const cases: { distro: string; osRelease: string; expect: string[]; exec: string }[] = [
  {
    distro: 'Debian',
    osRelease: 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n',
    expect: [
      'apt-get update [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
      'apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
    ],
    exec: '/lib/systemd/systemd',
  },
  {
    distro: 'Ubuntu',
    osRelease: 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\n',
    expect: [
      'apt-get update [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
      'apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
    ],
    exec: '/lib/systemd/systemd',
  },
  {
    distro: 'an Ubuntu derivative (ID_LIKE="ubuntu debian")',
    osRelease: 'ID=pop\nID_LIKE="ubuntu debian"\n',
    expect: [
      'apt-get update [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
      'apt-get install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]',
    ],
    exec: '/lib/systemd/systemd',
  },
  {
    distro: 'Fedora',
    osRelease: 'NAME="Fedora Linux"\nID=fedora\n',
    expect: ['dnf -y install systemd openssh-server iproute [DEBIAN_FRONTEND= policy-rc.d=none unsafe-io=no]'],
    exec: '/usr/lib/systemd/systemd',
  },
  {
    distro: 'Rocky (ID_LIKE rhel)',
    osRelease: 'ID="rocky"\nID_LIKE="rhel centos fedora"\n',
    expect: ['dnf -y install systemd openssh-server iproute [DEBIAN_FRONTEND= policy-rc.d=none unsafe-io=no]'],
    exec: '/usr/lib/systemd/systemd',
  },
  {
    distro: 'Arch',
    osRelease: 'NAME="Arch Linux"\nID=arch\n',
    expect: ['pacman -Sy --noconfirm systemd openssh iproute2 [DEBIAN_FRONTEND= policy-rc.d=none unsafe-io=no]'],
    exec: '/lib/systemd/systemd',
  },
  {
    distro: 'openSUSE',
    osRelease: 'NAME="openSUSE Tumbleweed"\nID="opensuse-tumbleweed"\nID_LIKE="opensuse suse"\n',
    expect: ['zypper -n install systemd openssh iproute2 [DEBIAN_FRONTEND= policy-rc.d=none unsafe-io=no]'],
    exec: '/lib/systemd/systemd',
  },
];

for (const c of cases) {
  test(`${c.distro}: installs systemd + sshd with its package manager, enables units, execs systemd`, { skip }, async () => {
    const g = await makeGuest(c.osRelease);
    try {
      const r = g.run();
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(pmLog(g), c.expect);
      assert.match(r.stdout, new RegExp(`banger-first-boot: test mode: would exec ${c.exec}\\b`));
      for (const s of ['mount-basics', 'seed', 'install', 'configure', 'exec-init']) assert.match(r.stdout, new RegExp(`^banger-first-boot: step ${s}`, 'm'));
      const sshUnit = c.expect[0]!.startsWith('apt-get') ? 'ssh.service' : 'sshd.service';
      const wants = 'etc/systemd/system/multi-user.target.wants';
      assert.equal(readlinkSync(join(g.root, wants, sshUnit)), `${c.exec.replace(/\/systemd$/, '/system')}/${sshUnit}`);
      assert.equal(readlinkSync(join(g.root, wants, 'banger-vsock-agent.service')), '/etc/systemd/system/banger-vsock-agent.service');
      assert.match(g.read('var/lib/banger/first-boot.done'), new RegExp(`init=${c.exec}`));
      assert.equal(g.has('usr/sbin/policy-rc.d'), false, 'temporary policy-rc.d removed');
      assert.equal(g.has('etc/apt/apt.conf.d/00banger-first-boot'), false, 'temporary apt config removed');
    } finally {
      rmSync(g.root, { recursive: true, force: true });
    }
  });
}

test('Alpine: installs openrc + openssh with apk, enables OpenRC services, execs /sbin/init', { skip }, async () => {
  const g = await makeGuest('NAME="Alpine Linux"\nID=alpine\n');
  try {
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(pmLog(g), ['apk add --no-cache openrc openssh [DEBIAN_FRONTEND= policy-rc.d=none unsafe-io=no]']);
    assert.match(r.stdout, /would exec \/sbin\/init$/m);
    assert.equal(g.mode('etc/init.d/banger-vsock-agent'), 0o755);
    assert.equal(readlinkSync(join(g.root, 'etc/runlevels/default/sshd')), '/etc/init.d/sshd');
    assert.equal(readlinkSync(join(g.root, 'etc/runlevels/default/banger-vsock-agent')), '/etc/init.d/banger-vsock-agent');
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

/** A guest whose seed asks for a package mirror and a proxy. */
function mirrorSeed(extra: Record<string, string> = {}): Record<string, string> {
  return { ...defaultSeed(), 'package-mirror': 'http://10.0.0.1:8080/debian\n', 'package-proxy': 'http://10.0.0.1:3128\n', ...extra };
}

test('--package-mirror + --package-proxy on Debian: apt uses a temporary source list and the proxy for the install only; the image sources are untouched and used again after', {
  skip,
}, async () => {
  const g = await makeGuest('ID=debian\nVERSION_CODENAME=bookworm\n', mirrorSeed());
  try {
    mkdirSync(join(g.root, 'etc/apt/sources.list.d'), { recursive: true });
    const deb822 =
      'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n';
    writeFileSync(join(g.root, 'etc/apt/sources.list.d/debian.sources'), deb822);
    mkdirSync(join(g.root, 'usr/share/keyrings'), { recursive: true });
    writeFileSync(join(g.root, 'usr/share/keyrings/debian-archive-keyring.gpg'), 'k');
    mkdirSync(join(g.root, 'var/lib/apt/lists'), { recursive: true });
    writeFileSync(join(g.root, 'var/lib/apt/lists/10.0.0.1:8080_debian_dists_bookworm_InRelease'), 'from the mirror');
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const opts =
      '-o Acquire::http::Proxy=http://10.0.0.1:3128 -o Acquire::https::Proxy=http://10.0.0.1:3128 -o Dir::Etc::SourceList=/var/lib/banger/first-boot-pkg/sources.list -o Dir::Etc::SourceParts=/var/lib/banger/first-boot-pkg/sources.list.d';
    const line = 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://10.0.0.1:8080/debian bookworm main';
    const env = '  env http_proxy=http://10.0.0.1:3128 https_proxy=http://10.0.0.1:3128';
    const file = `  file /var/lib/banger/first-boot-pkg/sources.list: ${line}`;
    const flags = '[DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]';
    assert.deepEqual(pmLog(g), [
      `apt-get ${opts} update ${flags}`,
      env,
      file,
      `apt-get ${opts} install -y --no-install-recommends systemd systemd-sysv openssh-server iproute2 ca-certificates ${flags}`,
      env,
      file,
    ]);
    assert.match(r.stdout, /package mirror for this install: http:\/\/10\.0\.0\.1:8080\/debian/);
    assert.match(r.stdout, /package proxy for this install: http:\/\/10\.0\.0\.1:3128/);
    assert.match(r.stdout, /the image's own package sources apply again/);
    assert.equal(g.read('etc/apt/sources.list.d/debian.sources'), deb822, 'the image sources are never edited');
    assert.equal(g.has('var/lib/banger/first-boot-pkg'), false, 'the temporary source list is gone');
    assert.equal(g.has('var/lib/apt/lists/10.0.0.1:8080_debian_dists_bookworm_InRelease'), false, "the mirror's indexes are dropped");
    assert.match(r.stdout, /would exec \/lib\/systemd\/systemd$/m);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('--package-mirror on the other families: apk, dnf, pacman and zypper get the documented equivalent; nothing of the image is edited', {
  skip,
}, async () => {
  const fams: { osRelease: string; files?: Record<string, string>; expect: RegExp[] }[] = [
    {
      osRelease: 'ID=alpine\n',
      files: { 'etc/alpine-release': '3.19.1\n', 'etc/apk/repositories': 'https://dl-cdn.alpinelinux.org/alpine/v3.19/main\n' },
      expect: [
        /^apk --repositories-file \/var\/lib\/banger\/first-boot-pkg\/repositories add --no-cache openrc openssh /m,
        /: http:\/\/10\.0\.0\.1:8080\/debian\/v3\.19\/main$/m,
        /: http:\/\/10\.0\.0\.1:8080\/debian\/v3\.19\/community$/m,
      ],
    },
    {
      osRelease: 'ID=fedora\nVERSION_ID=40\n',
      expect: [
        /^dnf --setopt=proxy=http:\/\/10\.0\.0\.1:3128 --disablerepo=\* --repofrompath=banger-1,http:\/\/10\.0\.0\.1:8080\/debian\/releases\/40\/Everything\/x86_64\/os\/ --repofrompath=banger-2,http:\/\/10\.0\.0\.1:8080\/debian\/updates\/40\/Everything\/x86_64\/ --enablerepo=banger-1 --enablerepo=banger-2 -y install/m,
      ],
    },
    {
      osRelease: 'ID=arch\n',
      files: { 'etc/pacman.conf': '[core]\nInclude = /etc/pacman.d/mirrorlist\n' },
      expect: [
        /^pacman --config \/var\/lib\/banger\/first-boot-pkg\/pacman\.conf -Sy /m,
        /pacman\.conf: Include = \/var\/lib\/banger\/first-boot-pkg\/mirrorlist$/m,
      ],
    },
    {
      osRelease: 'ID="opensuse-leap"\nVERSION_ID="15.6"\nID_LIKE="suse opensuse"\n',
      expect: [
        /^zypper --reposd-dir \/var\/lib\/banger\/first-boot-pkg\/repos\.d -n install/m,
        /banger-oss\.repo: baseurl=http:\/\/10\.0\.0\.1:8080\/debian\/distribution\/leap\/15\.6\/repo\/oss\/$/m,
      ],
    },
  ];
  for (const f of fams) {
    const g = await makeGuest(f.osRelease, mirrorSeed());
    try {
      for (const [p, c] of Object.entries(f.files ?? {})) {
        mkdirSync(join(g.root, p, '..'), { recursive: true });
        writeFileSync(join(g.root, p), c);
      }
      const r = g.run();
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const log = pmLog(g).join('\n');
      for (const re of f.expect) assert.match(log, re);
      assert.match(log, /env http_proxy=http:\/\/10\.0\.0\.1:3128/);
      for (const [p, c] of Object.entries(f.files ?? {})) assert.equal(g.read(p), c, `${p} unchanged`);
      assert.equal(g.has('var/lib/banger/first-boot-pkg'), false);
    } finally {
      rmSync(g.root, { recursive: true, force: true });
    }
  }
});

test('a seed package-mirror that is not an http(s) URL stops the boot naming it; no install runs', { skip }, async () => {
  const g = await makeGuest('ID=debian\nVERSION_CODENAME=bookworm\n', mirrorSeed({ 'package-mirror': 'ftp://10.0.0.1/debian\n' }));
  try {
    const r = g.run();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /package-mirror\/package-proxy 'ftp:\/\/10\.0\.0\.1\/debian' is not an http\(s\) URL/);
    assert.deepEqual(pmLog(g), []);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('systemd present but no SSH server: installs anyway, then enables ssh.service', { skip }, async () => {
  const g = await makeGuest('ID=debian\n');
  try {
    mkdirSync(join(g.root, 'lib/systemd/system'), { recursive: true });
    writeFileSync(join(g.root, 'lib/systemd/systemd'), '#!/bin/sh\n', { mode: 0o755 });
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /step install: systemd is present but no SSH server is/);
    assert.equal(pmLog(g).length, 2);
    assert.equal(readlinkSync(join(g.root, 'etc/systemd/system/multi-user.target.wants/ssh.service')), '/lib/systemd/system/ssh.service');
    assert.match(r.stdout, /would exec \/lib\/systemd\/systemd$/m);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('Alpine with OpenRC and sshd already installed: nothing installed, execs /sbin/init', { skip }, async () => {
  const g = await makeGuest('ID=alpine\n');
  try {
    writeFileSync(join(g.root, 'etc/alpine-release'), '3.20.0\n');
    writeFileSync(join(g.root, 'sbin/openrc'), '#!/bin/sh\n', { mode: 0o755 });
    mkdirSync(join(g.root, 'etc/init.d'), { recursive: true });
    writeFileSync(join(g.root, 'etc/init.d/sshd'), '#!/sbin/openrc-run\n', { mode: 0o755 });
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(pmLog(g), []);
    assert.match(r.stdout, /would exec \/sbin\/init$/m);
    assert.equal(readlinkSync(join(g.root, 'etc/runlevels/default/banger-vsock-agent')), '/etc/init.d/banger-vsock-agent');
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('unknown distribution: clear error naming the os-release ID, nothing installed, no exec', { skip }, async () => {
  const g = await makeGuest('NAME="Plan 9"\nID=plan9\nID_LIKE=bell-labs\n');
  try {
    const r = g.run();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /banger-first-boot: error: step 'install' failed: unsupported distribution \(os-release ID='plan9' ID_LIKE='bell-labs'\)/);
    assert.match(r.stderr, /banger-first-boot: hint: use an image that already has systemd/);
    assert.deepEqual(pmLog(g), []);
    assert.doesNotMatch(r.stdout, /would exec/);
    assert.equal(g.has('var/lib/banger/first-boot.done'), false);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('no os-release at all: the same clear error', { skip }, async () => {
  const g = await makeGuest(undefined);
  try {
    const r = g.run();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unsupported distribution \(os-release ID='\?'/);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('package manager failure: error with the --nat hint, temporary policy-rc.d removed, no exec', { skip }, async () => {
  const g = await makeGuest('ID=debian\n');
  try {
    const r = g.run({ STUB_FAIL: '1' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: step 'install' failed: apt-get could not install systemd and openssh-server/);
    assert.match(r.stderr, /hint: .*--nat/);
    assert.deepEqual(pmLog(g), ['apt-get update [DEBIAN_FRONTEND=noninteractive policy-rc.d=101 unsafe-io=yes]']);
    assert.equal(g.has('usr/sbin/policy-rc.d'), false);
    assert.equal(g.has('etc/apt/apt.conf.d/00banger-first-boot'), false);
    assert.doesNotMatch(r.stdout, /would exec/);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('seed applied: host key 0600, authorized_keys 0700/0600, hostname, resolv.conf, /etc/hosts; idempotent on the next boot', { skip }, async () => {
  const g = await makeGuest('ID=debian\n');
  try {
    // an image whose resolv.conf is a symlink (systemd-resolved style): replaced, not followed
    symlinkSync('/run/systemd/resolve/stub-resolv.conf', join(g.root, 'etc/resolv.conf'));
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(g.read('etc/ssh/ssh_host_ed25519_key'), HOST_KEY);
    assert.equal(g.mode('etc/ssh/ssh_host_ed25519_key'), 0o600);
    assert.equal(g.read('etc/ssh/ssh_host_ed25519_key.pub'), HOST_PUB);
    assert.equal(g.mode('etc/ssh/ssh_host_ed25519_key.pub'), 0o644);
    assert.equal(g.mode('root/.ssh'), 0o700);
    assert.equal(g.read('root/.ssh/authorized_keys'), AUTH);
    assert.equal(g.mode('root/.ssh/authorized_keys'), 0o600);
    assert.equal(statSync(join(g.root, 'root/.ssh/authorized_keys')).uid, 0);
    assert.equal(g.read('etc/hostname'), 'testbox\n');
    assert.equal(g.read('etc/resolv.conf'), 'nameserver 10.0.0.1\n');
    assert.equal(g.mode('etc/resolv.conf'), 0o644);
    assert.equal(g.read('etc/banger/network.env'), defaultSeed()['network.env']);
    assert.equal(g.read('etc/banger/seed-version'), '1\n');
    const hosts = g.read('etc/hosts');
    assert.match(hosts, /^10\.9\.9\.9 keepme$/m, 'image lines kept');
    assert.match(hosts, /^127\.0\.0\.1 localhost$/m);
    assert.match(hosts, /^10\.0\.0\.2 testbox # banger$/m);
    assert.match(r.stdout, /banger-first-boot: hostname testbox/);

    // second boot with a changed seed: systemd now present, nothing installed again,
    // the banger hosts line replaced rather than duplicated
    writeFileSync(join(g.root, 'seed/hostname'), 'renamed\n');
    const r2 = g.run();
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    assert.equal(pmLog(g).length, 2, 'package manager not run again');
    assert.doesNotMatch(r2.stdout, /step install/);
    const hosts2 = g.read('etc/hosts');
    assert.equal(hosts2.match(/# banger$/gm)?.length, 1);
    assert.match(hosts2, /^10\.0\.0\.2 renamed # banger$/m);
    assert.equal(hosts2.match(/^127\.0\.0\.1 localhost$/gm)?.length, 1);
    assert.equal(g.read('etc/hostname'), 'renamed\n');
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('sshd_config without an Include of sshd_config.d gets one at the top', { skip }, async () => {
  const g = await makeGuest('ID=debian\n');
  try {
    mkdirSync(join(g.root, 'etc/ssh'), { recursive: true });
    writeFileSync(join(g.root, 'etc/ssh/sshd_config'), 'PermitRootLogin yes\nPasswordAuthentication yes\n');
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(g.read('etc/ssh/sshd_config'), 'Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\nPasswordAuthentication yes\n');
    // a second boot does not add it twice
    g.run();
    assert.equal(g.read('etc/ssh/sshd_config').match(/^Include/gm)?.length, 1);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('a package manager missing from the image is named in the error', { skip }, async () => {
  const g = await makeGuest('ID=debian\n');
  try {
    rmSync(join(g.root, 'usr/bin/apt-get'));
    const r = g.run();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: step 'install' failed: package manager 'apt-get' not found in the image \(os-release ID='debian'\)/);
    assert.equal(g.has('usr/sbin/policy-rc.d'), false);
    assert.equal(g.has('etc/apt/apt.conf.d/00banger-first-boot'), false);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('a seed without a host key stops the boot with a clear error', { skip }, async () => {
  const seed = defaultSeed();
  delete seed['ssh/ssh_host_ed25519_key'];
  const g = await makeGuest('ID=debian\n', seed);
  try {
    const r = g.run();
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: step 'seed' failed: seed has no ssh\/ssh_host_ed25519_key/);
    assert.deepEqual(pmLog(g), []);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('--mount: the seed mounts list is kept in /etc/banger/mounts and each line mounted (test mode: logged); a bad line is skipped; gone when the seed has none', {
  skip,
}, async () => {
  const g = await makeGuest('ID=debian\n', { ...defaultSeed(), mounts: 'banger0 /mnt/rw rw virtiofs\nbanger1 /mnt/ro ro 9p\nevil relative rw 9p\n' });
  try {
    const r = g.run();
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(g.read('etc/banger/mounts'), 'banger0 /mnt/rw rw virtiofs\nbanger1 /mnt/ro ro 9p\nevil relative rw 9p\n');
    assert.match(r.stdout, /step mounts: host folders from \/etc\/banger\/mounts/);
    assert.match(r.stdout, /test mode: would mount virtiofs banger0 on \/mnt\/rw \(rw\)/);
    assert.match(r.stdout, /test mode: would mount 9p banger1 on \/mnt\/ro \(trans=virtio,version=9p2000\.L,msize=262144,ro\)/);
    assert.match(r.stdout, /warning: ignoring mount line for tag 'evil'/);
    rmSync(join(g.root, 'seed', 'mounts'));
    const again = g.run();
    assert.equal(again.code, 0, again.stderr);
    assert.equal(g.has('etc/banger/mounts'), false, 'a seed without mounts removes the list');
    assert.doesNotMatch(again.stdout, /step mounts/);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test("prepare mode (seed `prepare`): installs, records the packages the install added, scrubs per-VM identity and caches, restores the image's resolv.conf/hostname/hosts, never execs an init", {
  skip,
}, async () => {
  const g = await makeGuest('NAME="Debian GNU/Linux"\nID=debian\nVERSION_CODENAME=bookworm\n', { ...defaultSeed(), prepare: '1\n' });
  try {
    // A package database that the stub install extends (dpkg-query lists it), and what an install leaves behind.
    const dpkgQuery = `#!/bin/sh\nprintf 'installed base-files 12.4\\nconfig-files old-thing 1.0\\n'\n[ -x /lib/systemd/systemd ] && printf 'installed systemd 252.39-1~deb12u1\\ninstalled openssh-server 1:9.2p1-2+deb12u7\\n'\nexit 0\n`;
    writeFileSync(join(g.root, 'usr/bin/dpkg-query'), dpkgQuery);
    chmodSync(join(g.root, 'usr/bin/dpkg-query'), 0o755);
    mkdirSync(join(g.root, 'etc/ssh'), { recursive: true });
    for (const d of ['var/lib/apt/lists/partial', 'var/cache/apt/archives', 'var/log/apt', 'var/lib/systemd', 'var/tmp'])
      mkdirSync(join(g.root, d), { recursive: true });
    writeFileSync(join(g.root, 'etc/ssh/ssh_host_rsa_key'), 'made by the install');
    writeFileSync(join(g.root, 'var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease'), 'index');
    writeFileSync(join(g.root, 'var/cache/apt/pkgcache.bin'), 'cache');
    writeFileSync(join(g.root, 'var/cache/apt/archives/systemd_252.deb'), 'deb');
    writeFileSync(join(g.root, 'var/log/apt/history.log'), 'Install: systemd');
    writeFileSync(join(g.root, 'var/lib/systemd/random-seed'), 'seed');
    writeFileSync(join(g.root, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n');
    writeFileSync(join(g.root, 'etc/resolv.conf'), "nameserver 192.0.2.53 # the image's\n");
    writeFileSync(join(g.root, 'var/tmp/leftover'), 'x');
    const r = g.run();
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /prepare mode: install once/);
    for (const s of ['prepare', 'install', 'configure', 'packages', 'scrub', 'prepare-done'])
      assert.match(r.stdout, new RegExp(`^banger-first-boot: step ${s}\\b`, 'm'));
    assert.match(r.stdout, /^banger-first-boot: prepare done/m);
    // What the host reads (vms/prepare.ts addedPackages): one console line per package added.
    assert.match(r.stdout, /^banger-first-boot: added openssh-server 1:9\.2p1-2\+deb12u7\nbanger-first-boot: added systemd 252\.39-1~deb12u1\n/m);
    assert.doesNotMatch(r.stdout, /would exec/, 'prepare mode never execs an init');
    assert.equal(pmLog(g).length, 2, 'apt-get update + install ran');
    assert.equal(g.read('var/lib/banger/prepared-packages'), 'openssh-server 1:9.2p1-2+deb12u7\nsystemd 252.39-1~deb12u1\n');
    assert.equal(g.read('etc/machine-id'), '', 'machine-id emptied, file kept');
    assert.equal(
      g.has('etc/ssh/ssh_host_rsa_key') || g.has('etc/ssh/ssh_host_ed25519_key') || g.has('etc/ssh/ssh_host_ed25519_key.pub'),
      false,
      'host keys removed',
    );
    assert.equal(g.has('root/.ssh/authorized_keys'), false);
    assert.equal(g.has('var/lib/apt/lists/deb.debian.org_dists_bookworm_InRelease'), false);
    assert.equal(g.has('var/lib/apt/lists/partial'), true, 'apt directories stay');
    assert.equal(g.has('var/cache/apt/pkgcache.bin') || g.has('var/cache/apt/archives/systemd_252.deb'), false);
    assert.equal(g.read('var/log/apt/history.log'), '', 'logs truncated');
    assert.equal(g.has('var/lib/systemd/random-seed'), false);
    assert.equal(g.has('var/tmp/leftover'), false);
    assert.equal(g.read('etc/resolv.conf'), "nameserver 192.0.2.53 # the image's\n", "the image's resolv.conf is back");
    assert.equal(g.has('etc/hostname'), false, 'the image had no /etc/hostname');
    assert.equal(g.read('etc/hosts'), '# image hosts\n10.9.9.9 keepme\n', "the image's hosts is back (no banger line)");
    assert.equal(g.has('etc/banger/network.env') || g.has('var/lib/banger/first-boot.done'), false);
    // The configuration the install needs on every boot stays: units enabled.
    assert.equal(readlinkSync(join(g.root, 'etc/systemd/system/multi-user.target.wants/ssh.service')), '/lib/systemd/system/ssh.service');
    assert.equal(
      readlinkSync(join(g.root, 'etc/systemd/system/multi-user.target.wants/banger-vsock-agent.service')),
      '/etc/systemd/system/banger-vsock-agent.service',
    );

    // The prepared disk's next boot (an ordinary VM, no `prepare` in its seed): nothing to install, straight to systemd.
    rmSync(join(g.root, 'seed/prepare'));
    writeFileSync(join(g.root, 'pm.log'), '');
    const again = g.run();
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.doesNotMatch(again.stdout, /step install/);
    assert.match(again.stdout, /would exec \/lib\/systemd\/systemd/);
    assert.equal(g.read('etc/ssh/ssh_host_ed25519_key'), HOST_KEY, 'the VM gets its own pinned host key');
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

test('prepare mode: a failing install stops with the error line and hint, no "prepare done"', { skip }, async () => {
  const g = await makeGuest('ID=debian\nVERSION_CODENAME=bookworm\n', { ...defaultSeed(), prepare: '1\n' });
  try {
    const r = g.run({ STUB_FAIL: '1' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /banger-first-boot: error: step 'install' failed: apt-get could not install/);
    assert.doesNotMatch(r.stdout, /prepare done/);
  } finally {
    rmSync(g.root, { recursive: true, force: true });
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { injectGuestFiles, MASKED_UNITS, FIRST_BOOT_PATH, AGENT_PATH, defaultSources } from '../../src/guest/inject.js';
import { exec } from '../../src/core/exec.js';
import { nullLogger } from '../../src/core/log.js';
import { isBangerError, ErrorCode } from '../../src/core/errors.js';

const opts = { exec, log: nullLogger };

function tempRoot(): string {
  return mkdtempSync(join(tmpdir(), 'banger-guest-inject-'));
}

/** Every path below dir (relative), including dirs and links, sorted. */
function tree(dir: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir)) {
    const rel = `${prefix}/${n}`;
    out.push(rel);
    const st = lstatSync(join(dir, n));
    if (st.isDirectory()) out.push(...tree(join(dir, n), rel));
  }
  return out.sort();
}

function mode(p: string): number {
  return statSync(p).mode & 0o7777;
}

test('injects every guest file with its mode, unit links and masks into an empty rootfs', async () => {
  const root = tempRoot();
  try {
    const { injected } = await injectGuestFiles(root, opts);
    const src = defaultSources();
    // first-boot script and agent: exact bytes, 0755
    assert.equal(mode(join(root, FIRST_BOOT_PATH)), 0o755);
    assert.deepEqual(readFileSync(join(root, FIRST_BOOT_PATH)), readFileSync(join(src.filesDir, 'banger-first-boot.sh')));
    assert.equal(mode(join(root, AGENT_PATH)), 0o755);
    assert.deepEqual(readFileSync(join(root, AGENT_PATH)), readFileSync(src.agentPath));
    assert.equal(readFileSync(join(root, AGENT_PATH)).subarray(0, 4).toString('latin1'), '\x7fELF');
    // agent unit (0644) enabled via multi-user.target.wants
    const unit = join(root, 'etc/systemd/system/banger-vsock-agent.service');
    assert.equal(mode(unit), 0o644);
    assert.match(readFileSync(unit, 'utf8'), /ExecStart=\/usr\/local\/bin\/banger-vsock-agent\n/);
    assert.match(readFileSync(unit, 'utf8'), /WantedBy=multi-user.target/);
    assert.equal(
      readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/banger-vsock-agent.service')),
      '/etc/systemd/system/banger-vsock-agent.service',
    );
    // masks
    for (const u of MASKED_UNITS) assert.equal(readlinkSync(join(root, 'etc/systemd/system', u)), '/dev/null', u);
    assert.ok(MASKED_UNITS.includes('dev-ttyS0.device') && MASKED_UNITS.includes('dev-vdb.device') && MASKED_UNITS.includes('serial-getty@ttyS0.service'));
    // sshd drop-in
    const sshd = readFileSync(join(root, 'etc/ssh/sshd_config.d/banger.conf'), 'utf8');
    assert.equal(mode(join(root, 'etc/ssh/sshd_config.d/banger.conf')), 0o644);
    assert.match(sshd, /^PermitRootLogin prohibit-password$/m);
    assert.match(sshd, /^PasswordAuthentication no$/m);
    assert.equal(mode(join(root, 'usr/local/share/banger/openrc/banger-vsock-agent')), 0o755);
    // no ssh unit in this image, so no ssh link
    assert.equal(existsSync(join(root, 'etc/systemd/system/multi-user.target.wants/ssh.service')), false);
    // the returned list is exactly what is on disk (files + links), and no temp files remain
    const onDisk = tree(root).filter((p) => !lstatSync(join(root, p)).isDirectory());
    assert.deepEqual([...injected].sort(), onDisk);
    assert.equal(
      onDisk.some((p) => p.includes('.tmp')),
      false,
    );
    // directories created 0755
    for (const d of ['usr', 'usr/local', 'usr/local/libexec', 'etc/systemd/system']) assert.equal(mode(join(root, d)), 0o755, d);
    // idempotent: a second run gives the same tree
    const before = tree(root);
    await injectGuestFiles(root, opts);
    assert.deepEqual(tree(root), before);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('enables ssh.service when the image ships it (merged /usr: /lib -> usr/lib)', async () => {
  const root = tempRoot();
  try {
    mkdirSync(join(root, 'usr/lib/systemd/system'), { recursive: true });
    symlinkSync('usr/lib', join(root, 'lib'));
    writeFileSync(join(root, 'usr/lib/systemd/system/ssh.service'), '[Service]\n');
    writeFileSync(join(root, 'usr/lib/systemd/system/sshd.service'), '[Service]\n');
    const { injected } = await injectGuestFiles(root, opts);
    const link = 'etc/systemd/system/multi-user.target.wants/ssh.service';
    assert.equal(readlinkSync(join(root, link)), '/lib/systemd/system/ssh.service');
    assert.ok(injected.includes('/' + link));
    assert.equal(existsSync(join(root, 'etc/systemd/system/multi-user.target.wants/sshd.service')), false);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('enables sshd.service (Fedora/Arch naming) when only that exists', async () => {
  const root = tempRoot();
  try {
    mkdirSync(join(root, 'usr/lib/systemd/system'), { recursive: true });
    writeFileSync(join(root, 'usr/lib/systemd/system/sshd.service'), '[Service]\n');
    await injectGuestFiles(root, opts);
    assert.equal(readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/sshd.service')), '/usr/lib/systemd/system/sshd.service');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('an absolute symlink in the image is resolved inside the rootfs, never on the host', async () => {
  const root = tempRoot();
  const hostDir = mkdtempSync(join(tmpdir(), 'banger-guest-host-'));
  try {
    // /usr/local -> <absolute host dir>: inside the guest that means <root><hostDir>
    mkdirSync(join(root, 'usr'), { recursive: true });
    symlinkSync(hostDir, join(root, 'usr/local'));
    await injectGuestFiles(root, opts);
    assert.deepEqual(readdirSync(hostDir), [], 'nothing written to the host directory');
    assert.equal(mode(join(root, hostDir, 'libexec/banger-first-boot')), 0o755);
    // the link itself is untouched
    assert.equal(readlinkSync(join(root, 'usr/local')), hostDir);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(hostDir, { recursive: true, force: true });
  }
});

test('/usr/local -> / is the guest root: files land at <root>/libexec, <root>/bin', async () => {
  const root = tempRoot();
  try {
    mkdirSync(join(root, 'usr'));
    symlinkSync('/', join(root, 'usr/local'));
    await injectGuestFiles(root, opts);
    assert.equal(mode(join(root, 'libexec/banger-first-boot')), 0o755);
    assert.equal(mode(join(root, 'bin/banger-vsock-agent')), 0o755);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('refuses a rootfs whose /usr/local climbs out of the root with ..; nothing written outside', async () => {
  const root = tempRoot();
  const outside = mkdtempSync(join(tmpdir(), 'banger-guest-outside-'));
  try {
    mkdirSync(join(root, 'usr'));
    // relative to <root>/usr: ../../<outside basename> would be a sibling of root on the host
    symlinkSync(`../../${outside.split('/').pop()}`, join(root, 'usr/local'));
    await assert.rejects(injectGuestFiles(root, opts), (e: unknown) => {
      assert.ok(isBangerError(e, ErrorCode.Unsafe), String(e));
      assert.match((e as Error).message, /\/usr\/local\/libexec/);
      return true;
    });
    assert.deepEqual(readdirSync(outside), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  }
});

test('an unsafe /etc/systemd link is refused before anything is written', async () => {
  const root = tempRoot();
  try {
    mkdirSync(join(root, 'etc'));
    symlinkSync('../../../../..', join(root, 'etc/systemd'));
    await assert.rejects(injectGuestFiles(root, opts), (e: unknown) => isBangerError(e, ErrorCode.Unsafe) && /\/etc\/systemd/.test((e as Error).message));
    assert.deepEqual(tree(root), ['/etc', '/etc/systemd']);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('an existing symlink at a target file is replaced, not written through', async () => {
  const root = tempRoot();
  const victim = join(tmpdir(), `banger-guest-victim-${process.pid}`);
  try {
    writeFileSync(victim, 'precious\n');
    mkdirSync(join(root, 'usr/local/bin'), { recursive: true });
    symlinkSync(victim, join(root, 'usr/local/bin/banger-vsock-agent'));
    await injectGuestFiles(root, opts);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n');
    assert.ok(lstatSync(join(root, AGENT_PATH)).isFile());
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(victim, { force: true });
  }
});

test('a file where a directory is needed is a clear E_UNSAFE_ENTRY', async () => {
  const root = tempRoot();
  try {
    mkdirSync(join(root, 'usr'));
    writeFileSync(join(root, 'usr/local'), 'not a dir');
    await assert.rejects(
      injectGuestFiles(root, opts),
      (e: unknown) => isBangerError(e, ErrorCode.Unsafe) && /\/usr\/local is not a directory/.test((e as Error).message),
    );
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a missing agent binary fails before writing anything, with the build hint', async () => {
  const root = tempRoot();
  try {
    await assert.rejects(injectGuestFiles(root, { ...opts, agentPath: join(root, 'nope') }), (e: unknown) => {
      assert.ok(isBangerError(e, ErrorCode.NotFound));
      assert.match((e as { hint?: string }).hint ?? '', /npm run build/);
      return true;
    });
    assert.deepEqual(readdirSync(root), []);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a missing rootfs directory is E_NOT_FOUND naming it', async () => {
  const missing = join(tmpdir(), `banger-no-such-root-${process.pid}`);
  await assert.rejects(injectGuestFiles(missing, opts), (e: unknown) => isBangerError(e, ErrorCode.NotFound) && (e as Error).message.includes(missing));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatPort, parseMountSpec, parseMountSpecs, parsePortSpec, parsePortSpecs } from '../../src/vms/publish-spec.js';
import { checkMounts, seedMountsFile, verifyMountsCommand } from '../../src/vms/host-folders.js';
import { qemuMountArgs, qemuMountDevices, virtiofsdArgv } from '../../src/vms/drivers/qemu/mounts.js';
import { QemuDriver } from '../../src/vms/drivers/qemu/index.js';
import { FirecrackerDriver } from '../../src/vms/drivers/firecracker/index.js';
import { exec } from '../../src/core/exec.js';
import { PortForwards } from '../../src/vms/ports.js';
import { qemuArgv, qemuLaunch } from '../../src/vms/drivers/qemu/argv.js';
import { seedFiles } from '../../src/vms/seed.js';
import { vmFiles } from '../../src/vms/files.js';
import { absoluteHostDir } from '../../src/cli/commands/vm-create-extras.js';
import { isBangerError } from '../../src/core/errors.js';
import type { LaunchSpec } from '../../src/vms/drivers/types.js';
import type { VmRecord } from '../../src/vms/store.js';

/** Throws a BangerError whose message matches `re` and whose details name `field`. */
function refused(fn: () => unknown, field: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => isBangerError(e, 'E_INVALID') && e.details?.field === field && re.test(e.message));
}

test('parsePortSpec: HOSTPORT:GUESTPORT, HOSTIP default 127.0.0.1, /tcp, IPv6 in brackets', () => {
  assert.deepEqual(parsePortSpec('8080:80'), { hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80, proto: 'tcp' });
  assert.deepEqual(parsePortSpec('0.0.0.0:443:8443/tcp'), { hostIp: '0.0.0.0', hostPort: 443, guestPort: 8443, proto: 'tcp' });
  assert.deepEqual(parsePortSpec('[::1]:8080:80'), { hostIp: '::1', hostPort: 8080, guestPort: 80, proto: 'tcp' });
  assert.equal(formatPort(parsePortSpec('[::1]:8080:80')), '[::1]:8080->80/tcp');
  assert.equal(formatPort(parsePortSpec('1:65535/TCP')), '127.0.0.1:1->65535/tcp');
});

test('parsePortSpec: bad input names -p and the part that is wrong', () => {
  refused(() => parsePortSpec('8080'), '-p', /'8080': expected HOSTPORT:GUESTPORT/);
  refused(() => parsePortSpec('8080:80/udp'), '-p', /protocol 'udp' is not supported/);
  refused(() => parsePortSpec('0:80'), '-p', /HOSTPORT 0 is outside 1-65535/);
  refused(() => parsePortSpec('80:65536'), '-p', /GUESTPORT 65536 is outside/);
  refused(() => parsePortSpec('http:80'), '-p', /HOSTPORT 'http' is not a port number/);
  refused(() => parsePortSpec('localhost:80:80'), '-p', /HOSTIP 'localhost' is not an IPv4 address/);
  refused(() => parsePortSpec('1.2.3:80:80'), '-p', /HOSTIP '1\.2\.3'/);
  refused(() => parsePortSpec('[nope]:80:80'), '-p', /not an IPv6 address/);
  refused(() => parsePortSpec('1:2:3:4'), '-p', /expected HOSTPORT:GUESTPORT/);
  refused(() => parsePortSpec('-1:80'), '-p', /not a port number/);
  refused(() => parsePortSpecs(['8080:80', '127.0.0.1:8080:81']), '-p', /127\.0\.0\.1:8080 is published twice/);
});

test('PortForwards.checkConflicts: a port another VM publishes (even stopped, even by wildcard) is refused', () => {
  const other = { name: 'web', spec: { ports: [parsePortSpec('0.0.0.0:8080:80')] } } as unknown as VmRecord;
  assert.throws(
    () => PortForwards.checkConflicts('new', [parsePortSpec('8080:80')], [other]),
    (e: unknown) => isBangerError(e, 'E_IN_USE') && /already published by vm 'web'/.test(e.message),
  );
  PortForwards.checkConflicts('new', [parsePortSpec('8081:80')], [other]);
  PortForwards.checkConflicts('web', [parsePortSpec('8080:80')], [other]); // itself
});

test('parseMountSpec: absolute paths, :ro/:rw, no colon/comma/quote games, no system directories', () => {
  assert.deepEqual(parseMountSpec('/srv/data:/mnt/data', 0), { hostDir: '/srv/data', guestDir: '/mnt/data', readOnly: false, tag: 'banger0' });
  assert.deepEqual(parseMountSpec('/srv/data/:/mnt/data/:ro', 3), { hostDir: '/srv/data/', guestDir: '/mnt/data', readOnly: true, tag: 'banger3' });
  refused(() => parseMountSpec('data:/mnt', 0), '--mount', /HOSTDIR 'data' is not an absolute path/);
  refused(() => parseMountSpec('/data:mnt', 0), '--mount', /GUESTDIR 'mnt' is not an absolute path/);
  refused(() => parseMountSpec('/a:/b:rx', 0), '--mount', /mode 'rx' must be ro or rw/);
  refused(() => parseMountSpec('/a:/b:ro:x', 0), '--mount', /may not contain ':'/);
  refused(() => parseMountSpec('/a', 0), '--mount', /expected HOSTDIR:GUESTDIR/);
  refused(() => parseMountSpec('/a,b:/b', 0), '--mount', /HOSTDIR/);
  refused(() => parseMountSpec("/a:/b'c", 0), '--mount', /GUESTDIR/);
  refused(() => parseMountSpec('/a:/b c', 0), '--mount', /GUESTDIR/);
  refused(() => parseMountSpec('/a:/mnt/../etc', 0), '--mount', /contains '\.\.'/);
  refused(() => parseMountSpec('/a:/', 0), '--mount', /would hide a system directory/);
  refused(() => parseMountSpec('/a:/etc/x', 0), '--mount', /would hide a system directory/);
  refused(() => parseMountSpec('/a:/usr', 0), '--mount', /would hide a system directory/);
  refused(() => parseMountSpecs(['/a:/m', '/b:/m/']), '--mount', /GUESTDIR \/m is mounted twice/);
  assert.equal(absoluteHostDir('site:/srv:ro'), `${process.cwd()}/site:/srv:ro`);
  assert.equal(absoluteHostDir('/abs:/srv'), '/abs:/srv');
});

test('checkMounts: refused on a driver without features.mounts (firecracker) pointing to vm cp; host folder must exist and be a directory; the driver picks the device', async () => {
  const qemu = new QemuDriver(exec, { qemu: 'qemu-system-x86_64' });
  const firecracker = new FirecrackerDriver(exec, { firecracker: 'firecracker' });
  // a driver that says it has no shared folders is refused, whatever its name
  const noFolders = { kind: 'qemu' as const, features: { ...qemu.features, mounts: false }, folders: undefined };
  /** The QEMU driver with virtiofsd found (or not) as `virtiofsd` says. */
  const qemuWith = (virtiofsd: () => Promise<string | undefined>) => ({
    ...qemu,
    folders: { ...qemu.folders, devices: (ms: Parameters<typeof qemuMountDevices>[0]) => qemuMountDevices(ms, virtiofsd) },
  });
  const dir = mkdtempSync(join(tmpdir(), 'banger-mounts-'));
  try {
    writeFileSync(join(dir, 'file'), 'x');
    chownSync(dir, 4242, 4243);
    const m = parseMountSpec(`${dir}:/mnt/x`, 0);
    await assert.rejects(
      checkMounts([m], firecracker),
      (e: unknown) => isBangerError(e, 'E_INVALID') && /not supported on firecracker/.test(e.message) && /vm cp/.test(e.hint ?? ''),
    );
    await assert.rejects(checkMounts([m], noFolders), (e: unknown) => isBangerError(e, 'E_INVALID') && /not supported on qemu/.test(e.message));
    await assert.rejects(
      checkMounts([parseMountSpec(`${dir}/nope:/mnt/x`, 0)], qemu),
      (e: unknown) => isBangerError(e, 'E_NOT_FOUND') && e.message.includes(`${dir}/nope`),
    );
    await assert.rejects(
      checkMounts([parseMountSpec(`${dir}/file:/mnt/x`, 0)], qemu),
      (e: unknown) => isBangerError(e, 'E_INVALID') && /not a directory/.test(e.message),
    );
    assert.equal((await qemuMountDevices([m], async () => '/usr/lib/qemu/virtiofsd'))[0]!.kind, 'virtiofs');
    assert.equal((await qemuMountDevices([m], async () => undefined))[0]!.kind, '9p');
    assert.equal(
      (
        await checkMounts(
          [m],
          qemuWith(async () => undefined),
        )
      )[0]!.kind,
      '9p',
      'checkMounts returns the devices the driver picked',
    );
    assert.equal(
      (
        await checkMounts(
          [m],
          qemuWith(async () => '/usr/lib/qemu/virtiofsd'),
        )
      )[0]!.kind,
      'virtiofs',
    );
    assert.deepEqual(await checkMounts([], firecracker), []);
    // read-write virtiofs writes as HOSTDIR's owner: a folder owned by root (user or group) is refused, :ro is not
    mkdirSync(join(dir, 'rootowned'));
    chownSync(join(dir, 'rootowned'), 0, 0);
    const rootRw = parseMountSpec(`${dir}/rootowned:/mnt/x`, 0);
    const vfsd = qemuWith(async () => '/usr/lib/qemu/virtiofsd');
    await assert.rejects(
      checkMounts([rootRw], vfsd),
      (e: unknown) => isBangerError(e, 'E_INVALID') && /owned by root \(0:0\)/.test(e.message) && /:ro/.test(e.hint ?? ''),
    );
    chownSync(join(dir, 'rootowned'), 4242, 0);
    await assert.rejects(checkMounts([rootRw], vfsd), (e: unknown) => isBangerError(e, 'E_INVALID') && /owned by root \(4242:0\)/.test(e.message));
    assert.equal((await checkMounts([parseMountSpec(`${dir}/rootowned:/mnt/x:ro`, 0)], vfsd))[0]!.kind, 'virtiofs');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mount devices: QEMU argv (9p readonly, virtiofs shared memory), seed file, guest check', () => {
  const files = vmFiles('/v/box');
  const ninep = { ...parseMountSpec('/h/ab:/mnt/a:ro', 0), hostDir: '/h/a,b', kind: '9p' as const }; // a comma QEMU must escape
  const vfs = { ...parseMountSpec('/h/c:/mnt/c', 1), kind: 'virtiofs' as const };
  assert.deepEqual(qemuMountArgs([ninep], files.dir), [
    '-fsdev',
    'local,id=fs_banger0,path=/h/a,,b,security_model=mapped-xattr,readonly=on',
    '-device',
    'virtio-9p-device,fsdev=fs_banger0,mount_tag=banger0',
  ]);
  assert.deepEqual(qemuMountArgs([vfs], files.dir), [
    '-global',
    'virtio-mmio.force-legacy=false',
    '-chardev',
    'socket,id=fs_banger1,path=/v/box/virtiofs-banger1/fs.sock',
    '-device',
    'vhost-user-fs-device,chardev=fs_banger1,tag=banger1',
  ]);
  // virtiofsd: rw through banger-fsjail as the folder's owner, ro as root; never CAP_MKNOD/CAP_FSETID
  const vfsd = ['/vfsd', '--socket-path=/run/virtiofsd/fs.sock', '-o', 'source=/h/c', '-o', 'cache=auto', '-o', 'xattr', '-o', 'modcaps=-mknod:-fsetid'];
  assert.deepEqual(virtiofsdArgv(vfs, '/vfsd', { path: '/jail', uid: 1000, gid: 1001 }), ['/jail', '1000', '1001', ...vfsd, '--rlimit-nofile=0']);
  assert.deepEqual(virtiofsdArgv({ ...vfs, readOnly: true }, '/vfsd'), vfsd);
  assert.throws(() => virtiofsdArgv(vfs, '/vfsd'), /needs banger-fsjail/);
  const spec = {
    id: 'i',
    instance: 'x',
    name: 'box',
    files,
    vcpu: 1,
    memoryMiB: 512,
    kernel: '/k',
    cmdline: '',
    disks: [],
    net: { tap: 't', mac: 'm' },
    kvm: false,
  } as unknown as Parameters<typeof qemuLaunch>[0];
  const withFs = qemuArgv('qemu', qemuLaunch({ ...spec, mounts: [vfs] }));
  assert.match(withFs[withFs.indexOf('-M') + 1]!, /,memory-backend=mem$/);
  assert.equal(withFs[withFs.indexOf('-object') + 1], 'memory-backend-memfd,id=mem,size=512M,share=on', 'virtiofs needs shared RAM');
  const plain = qemuArgv('qemu', qemuLaunch(spec));
  assert.doesNotMatch(plain.join(' '), /memfd|fsdev|vhost-user/);
  assert.equal(plain[plain.indexOf('-object') + 1], 'memory-backend-ram,id=mem,size=512M', 'every VM names its RAM block mem');
  const warm = qemuArgv('qemu', qemuLaunch({ ...spec, memoryFile: '/w/a,b/memory' }));
  assert.equal(warm[warm.indexOf('-object') + 1], 'memory-backend-file,id=mem,size=512M,mem-path=/w/a,,b/memory,share=on');
  assert.equal(seedMountsFile([ninep, vfs]), 'banger0 /mnt/a ro 9p\nbanger1 /mnt/c rw virtiofs\n');
  assert.equal(seedMountsFile([]), undefined);
  const base = { name: 'b', net: { ip: '1.2.3.4', prefix: 24, gateway: '1.2.3.1', dns: [] }, hostKey: 'k', hostKeyPub: 'p', authorizedKey: 'a' };
  assert.deepEqual(seedFiles({ ...base, mounts: 'banger0 /mnt/a ro 9p\n' }).mounts, ['banger0 /mnt/a ro 9p\n', 0o644]);
  assert.equal(seedFiles(base).mounts, undefined);
  assert.equal(
    verifyMountsCommand([ninep, vfs]),
    `r=0; for d in '/mnt/a' '/mnt/c'; do grep -q " $d " /proc/mounts || { echo "not mounted: $d"; r=1; }; done; exit $r`,
  );
});

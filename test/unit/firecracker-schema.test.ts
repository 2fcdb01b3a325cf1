import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bootRequests,
  driveUpdateRequest,
  snapshotCreateRequest,
  snapshotLoadRequest,
  vmStateRequest,
  type FcBootConfig,
} from '../../src/vms/drivers/firecracker/requests.js';
import type { FcRequest } from '../../src/vms/drivers/firecracker/api-types.js';
import { loadSpec, SPEC_FILES, type SpecVersion } from '../helpers/firecracker-spec.js';

/**
 * Every request body the Firecracker driver can produce, over a table of VM configurations,
 * validates against the definitions of EVERY shipped OpenAPI spec (v1.5.0, the oldest release
 * banger accepts; v1.16.1; main) (objects closed: an added or
 * renamed field fails), goes to a path and method the spec defines, whose body definition is
 * the one the builder names, and carries a path id equal to the body id.
 */
const dir = '/var/lib/banger/vms/box';
const base: FcBootConfig = {
  vcpu: 2,
  memoryMiB: 1024,
  kernel: '/var/lib/banger/kernels/k/vmlinux',
  bootArgs: 'console=ttyS0 reboot=k panic=1 ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off',
  disks: [
    { id: 'root', path: `${dir}/root.ext4` },
    { id: 'seed', path: `${dir}/seed.ext4` },
  ],
  net: { tap: 'bg0a1b2c3d', mac: '06:00:0a:00:00:02' },
  logPath: `${dir}/firecracker.log`,
  metricsPath: `${dir}/firecracker.metrics`,
};
const configs: Record<string, FcBootConfig> = {
  minimal: { ...base, logPath: undefined, metricsPath: undefined, net: undefined },
  'with initrd': { ...base, initrd: '/var/lib/banger/kernels/k/initrd.img' },
  'without initrd, NAT': { ...base, bootArgs: base.bootArgs + ' banger.nat=1' },
  'work disk': { ...base, disks: [...base.disks, { id: 'work', path: `${dir}/work.ext4` }] },
  'modules disk (read-only)': { ...base, disks: [...base.disks, { id: 'modules', path: '/var/lib/banger/kernels/k/modules.ext4', readOnly: true }] },
  vsock: { ...base, vsock: { cid: 7, udsPath: `${dir}/vsock.sock` } },
  'disk limits (rate_limiter, iops and bytes/s)': { ...base, diskLimits: { iops: 100, bps: 1048576 } },
  'disk limits (iops only)': { ...base, diskLimits: { iops: 50 } },
  'everything, dirty-page tracking': {
    ...base,
    initrd: '/k/initrd.img',
    trackDirtyPages: true,
    disks: [...base.disks, { id: 'work', path: `${dir}/work.ext4` }, { id: 'modules', path: '/k/modules.ext4', readOnly: true }],
    vsock: { cid: 3, udsPath: `${dir}/vsock.sock` },
  },
  // Jailer: every path chroot-relative.
  jailer: {
    ...base,
    kernel: '/vmlinux',
    initrd: '/initrd.img',
    disks: [
      { id: 'root', path: '/root.ext4' },
      { id: 'seed', path: '/seed.ext4' },
    ],
    vsock: { cid: 4, udsPath: '/vsock.sock' },
    logPath: '/firecracker.log',
    metricsPath: '/firecracker.metrics',
  },
};
const extra: Record<string, FcRequest[]> = {
  'pause/resume': [vmStateRequest('Paused'), vmStateRequest('Resumed')],
  'drive re-pointed after a snapshot load': [driveUpdateRequest('root', `${dir}/root.ext4`), driveUpdateRequest('seed', '/seed.ext4')],
  'snapshot create': [
    snapshotCreateRequest({ snapshot_path: `${dir}/snap.state`, mem_file_path: `${dir}/snap.mem` }),
    snapshotCreateRequest({ snapshot_path: 's', mem_file_path: 'm', snapshot_type: 'Diff' }),
  ],
  'snapshot load': [
    snapshotLoadRequest({ snapshot_path: `${dir}/snap.state`, mem_backend: { backend_type: 'File', backend_path: `${dir}/snap.mem` } }),
    snapshotLoadRequest({
      snapshot_path: 's',
      mem_backend: { backend_type: 'File', backend_path: 'm' },
      resume_vm: true,
      track_dirty_pages: false,
      network_overrides: [{ iface_id: 'eth0', host_dev_name: 'bg0new' }],
      vsock_override: { uds_path: `${dir}/vsock.sock` },
    }),
  ],
};

/**
 * Snapshot-load fields newer than a spec (requests.ts snapshotLoadRequest says so): that release
 * refuses them, and nothing in banger sends them yet. Everything else must validate everywhere.
 */
const NEWER_LOAD_FIELDS: Partial<Record<SpecVersion, string[]>> = { 'v1.5.0': ['network_overrides', 'track_dirty_pages', 'vsock_override'] };

const ID_FIELD: Record<string, string> = { '/drives/{drive_id}': 'drive_id', '/network-interfaces/{iface_id}': 'iface_id' };

function checkRequest(version: SpecVersion, r: FcRequest): void {
  const spec = loadSpec(version);
  const route = spec.route(r.method, r.path);
  assert.ok(route, `${version}: ${r.method} ${r.path} (${r.step}) is not in the spec`);
  assert.equal(route.bodyDefinition, r.definition, `${r.step}: spec body is ${route.bodyDefinition}`);
  const v = spec.validator(r.definition!);
  assert.ok(v(r.body), `${version} ${r.step}: ${JSON.stringify(r.body)} → ${JSON.stringify(v.errors)}`);
  const idField = ID_FIELD[route.template];
  if (idField) assert.equal((r.body as Record<string, unknown>)[idField], Object.values(route.params)[0], `${r.step}: path id ≠ body id`);
}

for (const version of Object.keys(SPEC_FILES) as SpecVersion[]) {
  for (const [name, cfg] of Object.entries(configs)) {
    test(`firecracker ${version}: boot bodies validate (${name})`, () => {
      const reqs = bootRequests(cfg);
      assert.equal(reqs.at(-1)!.step, 'instance-start');
      for (const r of reqs) checkRequest(version, r);
      const drives = reqs.filter((r) => r.step.startsWith('drive-')).map((r) => r.body as { is_root_device: boolean; is_read_only: boolean; drive_id: string });
      assert.equal(drives.filter((d) => d.is_root_device).length, 1, 'exactly one root drive');
      for (const d of drives) assert.equal(d.is_read_only, d.drive_id === 'modules');
      for (const r of reqs.filter((x) => x.step.startsWith('drive-'))) {
        const rl = (r.body as { rate_limiter?: { ops?: { size: number; refill_time: number }; bandwidth?: { size: number; refill_time: number } } })
          .rate_limiter;
        if (!cfg.diskLimits) assert.equal(rl, undefined, `${r.step}: rate_limiter without disk limits`);
        else {
          assert.deepEqual(rl?.ops, cfg.diskLimits.iops ? { size: cfg.diskLimits.iops, refill_time: 1000 } : undefined, `${r.step}: ops bucket`);
          assert.deepEqual(rl?.bandwidth, cfg.diskLimits.bps ? { size: cfg.diskLimits.bps, refill_time: 1000 } : undefined, `${r.step}: bandwidth bucket`);
        }
      }
      const boot = reqs.find((r) => r.step === 'boot-source')!.body as { initrd_path?: string };
      assert.equal(boot.initrd_path, cfg.initrd);
    });
  }
  for (const [name, reqs] of Object.entries(extra)) {
    test(`firecracker ${version}: ${name} bodies validate`, () => {
      const newer = NEWER_LOAD_FIELDS[version] ?? [];
      for (const r of reqs) {
        const body = r.body as Record<string, unknown>;
        const late = r.step === 'snapshot-load' ? newer.filter((f) => f in body) : [];
        if (late.length === 0) {
          checkRequest(version, r);
          continue;
        }
        const v = loadSpec(version).validator(r.definition!);
        assert.equal(v(body), false, `${version} accepted ${late.join(', ')}`);
        const refused = (v.errors ?? []).map((e) => (e.params as { additionalProperty?: string }).additionalProperty).sort();
        assert.deepEqual(refused, late.sort(), `${version}: refused ${JSON.stringify(v.errors)}`);
        checkRequest(version, { ...r, body: Object.fromEntries(Object.entries(body).filter(([k]) => !late.includes(k))) });
      }
    });
  }
  test(`firecracker ${version}: the closed schemas refuse a renamed, an added and a missing field`, () => {
    const spec = loadSpec(version);
    const drive = { drive_id: 'root', path_on_host: '/r', is_root_device: true, is_read_only: false };
    assert.ok(spec.validator('Drive')(drive));
    const { is_read_only, ...renamedBase } = drive;
    assert.equal(spec.validator('Drive')({ ...renamedBase, read_only: is_read_only }), false, 'renamed field accepted');
    assert.equal(spec.validator('Drive')({ ...drive, bogus: 1 }), false, 'added field accepted');
    const { is_root_device: _r, ...missing } = drive;
    assert.equal(spec.validator('Drive')(missing), false, 'missing required field accepted');
    assert.equal(spec.validator('Vsock')({ guest_cid: 2, uds_path: '/v' }), false, 'guest_cid 2 (the host) accepted');
    assert.equal(spec.validator('MachineConfiguration')({ vcpu_count: 33, mem_size_mib: 128 }), false, '33 vCPUs accepted');
  });
}

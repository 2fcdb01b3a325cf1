#!/usr/bin/env node
/**
 * A STAND-IN for Firecracker's jailer, for tests only (no jailer binary here). Run by the
 * `jailer` wrapper of makeStandinJailer (index.ts), which execs what this prints.
 *
 * Parses the jailer's argv as the real one does (checked against src/jailer/src/main.rs and
 * env.rs of Firecracker, snapshot of 2026-08; --version is not emulated): required --id, --exec-file, --uid, --gid; optional
 * --chroot-base-dir (default /srv/jailer), --cgroup-version (1|2, default 1), --parent-cgroup,
 * --cgroup (repeatable), --netns, --resource-limit (repeatable), --daemonize, --new-pid-ns;
 * Firecracker's own arguments after `--`. An unknown or missing flag → exit 1 with a message.
 * Creates what the real jailer creates: `<base>/<exec name>/<id>/root` (refused when it exists),
 * the exec file copied in (owned by uid/gid), `<root>/<exec name>.pid` (create_new), the cgroup `<parent>/<id>` (v1: under the cpu controller) with the
 * process moved in (skipped, with a note on stderr, where no hierarchy is mounted). Then it prints, one per line, the command the wrapper execs (same pid, as
 * the real jailer's exec): drop to uid/gid (setpriv), FC_STANDIN_CHROOT=<root>, the copied
 * exec file with `--id <id> --start-time-us … --start-time-cpu-us … --parent-cpu-time-us …`
 * and the arguments after `--`. EMULATED: no chroot(2), no mount namespace, no /dev nodes.
 */
import { chownSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { basename, join } from 'node:path';

const die = (msg: string): never => {
  process.stderr.write(`jailer stand-in: ${msg}\n`);
  process.exit(1);
};
const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
const own = sep >= 0 ? argv.slice(0, sep) : argv;
const extra = sep >= 0 ? argv.slice(sep + 1) : [];
const VALUED = new Set([
  '--id',
  '--exec-file',
  '--uid',
  '--gid',
  '--chroot-base-dir',
  '--cgroup-version',
  '--parent-cgroup',
  '--cgroup',
  '--netns',
  '--resource-limit',
]);
const FLAGS = new Set(['--daemonize', '--new-pid-ns']);
const REPEAT = new Set(['--cgroup', '--resource-limit']);
const v: Record<string, string[]> = {};
for (let i = 0; i < own.length; i++) {
  const a = own[i]!;
  if (FLAGS.has(a)) v[a] = ['true'];
  else if (VALUED.has(a)) {
    const val = own[++i];
    if (val === undefined) die(`Argument Parsing: ${a} needs a value`);
    if (v[a] && !REPEAT.has(a)) die(`Argument Parsing: ${a} given twice`);
    (v[a] ??= []).push(val!);
  } else die(`Argument Parsing: Found argument '${a}' which wasn't expected`);
}
for (const r of ['--id', '--exec-file', '--uid', '--gid']) if (!v[r]) die(`Argument Parsing: Missing required argument '${r}'`);
const one = (k: string) => v[k]?.[0];
const id = one('--id')!;
if (!/^[a-zA-Z0-9-]{1,64}$/.test(id)) die(`Invalid instance ID: ${id}`);
const uid = Number(one('--uid'));
const gid = Number(one('--gid'));
if (!Number.isInteger(uid) || !Number.isInteger(gid)) die('Invalid uid or gid');
const exec = one('--exec-file')!;
if (!existsSync(exec) || !statSync(exec).isFile()) die(`Failed to canonicalize path ${exec}`);
if (!basename(exec).includes('firecracker')) die(`Invalid filename. The filename of \`--exec-file\` option must contain "firecracker": ${basename(exec)}`);
const cgv = one('--cgroup-version') ?? '1';
if (cgv !== '1' && cgv !== '2') die(`Invalid cgroup version: ${cgv}`);
if (v['--netns'] || v['--daemonize'] || v['--new-pid-ns']) die('stand-in: --netns, --daemonize and --new-pid-ns are not emulated');

const root = join(one('--chroot-base-dir') ?? '/srv/jailer', basename(exec), id, 'root');
if (existsSync(join(root, basename(exec)))) die(`chroot ${root} already holds ${basename(exec)}`);
mkdirSync(root, { recursive: true });
copyFileSync(exec, join(root, basename(exec)));
chmodSync(join(root, basename(exec)), 0o755);
chownSync(join(root, basename(exec)), uid, gid);
const parent = one('--parent-cgroup') ?? basename(exec);
const cg = cgv === '2' ? join('/sys/fs/cgroup', parent, id) : join('/sys/fs/cgroup/cpu', parent, id);
const hierarchy = cgv === '2' ? '/sys/fs/cgroup' : '/sys/fs/cgroup/cpu';
if (existsSync(join(hierarchy, 'cgroup.procs'))) {
  mkdirSync(cg, { recursive: true });
  writeFileSync(join(cg, 'cgroup.procs'), `${process.ppid}\n`); // the wrapper, which execs Firecracker
} else {
  // EMULATION GAP: `ip netns exec` (the test daemons' namespaces) remounts /sys, so no cgroup
  // hierarchy is visible; the real jailer would fail here, the stand-in goes on without one.
  process.stderr.write(`jailer stand-in: no cgroup v${cgv} hierarchy at ${hierarchy} in this mount namespace; cgroup ${cg} not created\n`);
}
// --cgroup FILE=VALUE, as the real jailer: the controller is FILE's prefix; v1 writes in that
// controller's own hierarchy (found in /proc/mounts) at <parent>/<id>, v2 in the unified group
// (controllers enabled for the parent); the pid that execs Firecracker joins each group.
for (const arg of v['--cgroup'] ?? []) {
  const eq = arg.indexOf('=');
  if (eq < 1 || !/^[a-z_]+\.[a-z_.]+$/.test(arg.slice(0, eq))) die(`Invalid cgroup argument: ${arg}`);
  const file = arg.slice(0, eq);
  const controller = file.split('.')[0]!;
  let dir: string | undefined;
  if (cgv === '2') {
    if (existsSync(join('/sys/fs/cgroup', 'cgroup.procs'))) {
      writeFileSync(join('/sys/fs/cgroup', parent, 'cgroup.subtree_control'), `+${controller}`);
      dir = cg;
    }
  } else {
    const m = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' '))
      .find((f) => f[2] === 'cgroup' && (f[3] ?? '').split(',').includes(controller));
    if (m) dir = join(m[1]!, parent, id);
  }
  if (!dir) {
    // EMULATION GAP (as above): no hierarchy visible; the real jailer would fail.
    process.stderr.write(`jailer stand-in: no cgroup v${cgv} ${controller} hierarchy in this mount namespace; ${arg} not applied\n`);
    continue;
  }
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, file), arg.slice(eq + 1));
  writeFileSync(join(dir, 'cgroup.procs'), `${process.ppid}\n`);
}
// Like the real one (without --new-pid-ns): `<chroot>/<exec name>.pid`, create_new, the pid that execs.
writeFileSync(join(root, `${basename(exec)}.pid`), String(process.ppid), { flag: 'wx' });
const us = String(Date.now() * 1000);
const cmd = [
  'setpriv',
  `--reuid=${uid}`,
  `--regid=${gid}`,
  '--clear-groups',
  'env',
  `FC_STANDIN_CHROOT=${root}`,
  join(root, basename(exec)),
  '--id',
  id,
  '--start-time-us',
  us,
  '--start-time-cpu-us',
  '0',
  '--parent-cpu-time-us',
  '0',
  ...extra,
];
process.stdout.write(cmd.join('\n') + '\n');

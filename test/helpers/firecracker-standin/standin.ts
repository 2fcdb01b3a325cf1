#!/usr/bin/env node
/**
 * A STAND-IN for Firecracker, for tests only (no Firecracker binary or usable KVM exists on our
 * machines). It boots nothing. It serves the API contract of Firecracker v1.16.1 on
 * `--api-sock` the way the real one does, so the driver is tested against the spec:
 * - HTTP/1.1 on a Unix socket; bodies only by Content-Length (chunked → 400);
 * - bodies validated against the spec's definitions with unknown fields rejected and required
 *   fields enforced (test/helpers/firecracker-spec.ts), path id = body id;
 * - resources opened at PUT time (kernel, initrd, drive files, the tap in /sys/class/net);
 * - pre-boot-only resources refused after InstanceStart, InstanceStart once;
 * - errors as 400 `{"fault_message": …}`; GET / → InstanceInfo; PATCH /vm; snapshots;
 * - SendCtrlAltDel ends the process (exit 0), like a guest rebooting with reboot=k;
 * - the vsock UDS bound at PUT /vsock answers the hybrid handshake `CONNECT <port>\n` →
 *   `OK <hostport>\n`; port 1024 is served by the REAL guest agent (dist/guest/…, `--stdio`);
 *   any other port is closed, as Firecracker does when nothing listens.
 * Knobs (env, or JSON in the file $FC_STANDIN_KNOBS, read at start):
 *   FC_STANDIN_FAIL_PATH=/boot-source  that path answers 400 with a fault_message;
 *   FC_STANDIN_DIE_EARLY=<code>         exit with that code before creating the socket;
 *   FC_STANDIN_NO_SOCKET=1              run but never create the socket;
 *   FC_STANDIN_VERSION=1.4.0            what --version and GET / report (default 1.16.1); it also picks
 *                                       the shipped spec requests are validated against (1.5.x → v1.5.0,
 *                                       1.17+ → main, else v1.16.1);
 *   FC_STANDIN_REQUEST_LOG=FILE         append one JSON line per API request ({method, path, body, status}).
 * Snapshots as Firecracker does them (src/vmm/src/rpc_interface.rs, persist.rs): create only when
 * paused, writing the vmstate (here JSON: the version, machine config, drive paths, tap, vsock
 * path) and a sparse memory file of the guest's size; load only on a fresh process (logger and
 * metrics allowed before it), refusing a vmstate of another version, a missing memory file, a
 * drive path or tap that cannot be opened, a vsock path that exists; `network_overrides` and
 * `vsock_override` replace the saved tap / socket; the VM is then Paused (Running with
 * `resume_vm`); `PATCH /drives/{id}` re-points a drive after start.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { loadSpec } from '../firecracker-spec.js';

const REPO = resolve(new URL('.', import.meta.url).pathname, '..', '..', '..', '..');
const knobsFile = process.env.FC_STANDIN_KNOBS;
const knobs: Record<string, string | undefined> = {
  ...process.env,
  ...(knobsFile && existsSync(knobsFile) ? (JSON.parse(readFileSync(knobsFile, 'utf8')) as Record<string, string>) : {}),
};
const VERSION = knobs.FC_STANDIN_VERSION ?? '1.16.1';
const args = process.argv.slice(2);
const arg = (name: string) => {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  return args.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
};

if (args.includes('--version')) {
  process.stdout.write(`Firecracker v${VERSION}\n\n`);
  process.exit(0);
}
if (knobs.FC_STANDIN_DIE_EARLY) {
  process.stderr.write('firecracker stand-in: dying early (FC_STANDIN_DIE_EARLY)\n');
  process.exit(Number(knobs.FC_STANDIN_DIE_EARLY) || 1);
}
/**
 * Under the STAND-IN jailer (jailer.ts) FC_STANDIN_CHROOT is the chroot directory: no chroot
 * happens (emulated), every path this process is given (--api-sock, every API body path) is
 * resolved under that directory, as the jailed real Firecracker would see it.
 */
const CHROOT = process.env.FC_STANDIN_CHROOT;
const inJail = (p: string): string => (CHROOT ? join(CHROOT, p) : p);
const apiSock = inJail(arg('--api-sock') ?? '/run/firecracker.socket');
const id = arg('--id') ?? 'anonymous-instance';
if (knobs.FC_STANDIN_NO_SOCKET) setInterval(() => {}, 1 << 30);
else if (existsSync(apiSock)) {
  // Real Firecracker: binding fails when the path exists (exit 1, "Failed to open the API socket").
  process.stderr.write(`Failed to open the API socket at ${apiSock}: Address in use\n`);
  process.exit(1);
} else serve();

function specFor(version: string): 'v1.5.0' | 'v1.16.1' | 'main-1.17.0-dev' {
  const [a = 0, b = 0] = version.split('.').map(Number);
  if (a === 1 && b < 16) return 'v1.5.0';
  if (a > 1 || b >= 17) return 'main-1.17.0-dev';
  return 'v1.16.1';
}

function serve(): void {
  const spec = loadSpec(specFor(VERSION));
  // What a vmstate records (and a load re-opens).
  const machine: { vcpu?: number; memMiB?: number } = {};
  const drives = new Map<string, string>();
  const taps = new Map<string, string>();
  let vsockPath: string | undefined;
  const PRE_BOOT_ONLY = new Set(['/logger', '/metrics', '/machine-config', '/boot-source', '/drives/{drive_id}', '/network-interfaces/{iface_id}', '/vsock']);
  const ID_FIELD: Record<string, string> = { '/drives/{drive_id}': 'drive_id', '/network-interfaces/{iface_id}': 'iface_id' };
  const configured = new Set<string>();
  let state: 'Not started' | 'Running' | 'Paused' = 'Not started';
  let logPath: string | undefined;
  const log = (msg: string) => logPath && appendFileSync(logPath, `[${id}:stand-in] ${msg}\n`);

  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => {
      try {
        handle(req, res, Buffer.concat(chunks));
      } catch (e) {
        fault(res, (e as Error).message);
      }
    });
  });
  const fault = (res: ServerResponse, msg: string, status = 400): void => {
    log(`fault: ${msg}`);
    const body = JSON.stringify({ fault_message: msg });
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body);
  };
  const ok = (res: ServerResponse, json?: unknown): void => {
    if (json === undefined) return void res.writeHead(204).end();
    const body = JSON.stringify(json);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }).end(body);
  };

  function handle(req: IncomingMessage, res: ServerResponse, raw: Buffer): void {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const reqLog = knobs.FC_STANDIN_REQUEST_LOG;
    if (reqLog) {
      // Logged as the answer is written, before the client can see it (so a log read after a
      // call returns holds that call).
      const writeHead = res.writeHead.bind(res) as (status: number, ...rest: unknown[]) => ServerResponse;
      res.writeHead = ((status: number, ...rest: unknown[]) => {
        let body: unknown;
        try {
          body = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
        } catch {
          body = raw.toString('utf8');
        }
        appendFileSync(reqLog, JSON.stringify({ method, path, body, status }) + '\n');
        return writeHead(status, ...rest);
      }) as typeof res.writeHead;
    }
    if (req.headers['transfer-encoding']) return fault(res, 'Transfer-Encoding is not supported; send Content-Length');
    if (raw.length > 0 && req.headers['content-length'] === undefined) return fault(res, 'missing Content-Length');
    const route = spec.route(method, path);
    if (!route)
      return fault(res, `Invalid request method and/or path: ${method} ${path}.`, method === 'GET' || method === 'PUT' || method === 'PATCH' ? 400 : 405);
    if (knobs.FC_STANDIN_FAIL_PATH === path) return fault(res, `stand-in: ${path} refused by FC_STANDIN_FAIL_PATH`);
    let body: Record<string, unknown> | undefined;
    if (route.bodyDefinition) {
      if (raw.length === 0) return fault(res, 'Empty request body');
      try {
        body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch (e) {
        return fault(res, `An error occurred when deserializing the json body of a request: ${(e as Error).message}`);
      }
      const v = spec.validator(route.bodyDefinition);
      if (!v(body))
        return fault(
          res,
          `An error occurred when deserializing the json body of a request: ${v.errors!.map((x) => `${x.instancePath || '/'} ${x.message}${'additionalProperty' in x.params ? ` \`${String(x.params.additionalProperty)}\`` : ''}`).join('; ')}`,
        );
      const idField = ID_FIELD[route.template];
      if (idField && body[idField] !== Object.values(route.params)[0]) return fault(res, `The id from the path does not match the id from the body!`);
    }
    if (method === 'GET' && route.template === '/') return ok(res, { id, state, vmm_version: VERSION, app_name: 'Firecracker' });
    if (method === 'GET' && route.template === '/version') return ok(res, { firecracker_version: VERSION });
    if (method === 'PUT' && PRE_BOOT_ONLY.has(route.template) && state !== 'Not started')
      return fault(res, 'The requested operation is not supported after starting the microVM.');
    switch (`${method} ${route.template}`) {
      case 'PUT /logger':
        if (configured.has('/logger')) return fault(res, 'Logger can be configured only once');
        logPath = body!.log_path === undefined ? undefined : inJail(body!.log_path as string);
        if (logPath) writeFileSync(logPath, '', { flag: 'a' });
        break;
      case 'PUT /machine-config':
        machine.vcpu = body!.vcpu_count as number;
        machine.memMiB = body!.mem_size_mib as number;
        break;
      case 'PUT /metrics':
        writeFileSync(inJail(body!.metrics_path as string), '', { flag: 'a' });
        break;
      case 'PUT /boot-source':
        for (const k of ['kernel_image_path', 'initrd_path']) {
          const p = body![k] as string | undefined;
          if (p !== undefined && !existsSync(inJail(p)))
            return fault(res, `Cannot open ${k === 'kernel_image_path' ? 'kernel' : 'initrd'} file: No such file or directory (os error 2)`);
        }
        break;
      case 'PUT /drives/{drive_id}':
        if (!existsSync(inJail(body!.path_on_host as string)))
          return fault(res, `Unable to create the block device: BackingFile(Os { code: 2, kind: NotFound }, "${String(body!.path_on_host)}")`);
        drives.set(String(body!.drive_id), String(body!.path_on_host));
        break;
      case 'PATCH /drives/{drive_id}':
        if (state === 'Not started') return fault(res, 'The requested operation is not supported before starting the microVM.');
        if (!drives.has(String(body!.drive_id))) return fault(res, `Unable to patch the block device: device ${String(body!.drive_id)} not found`);
        if (body!.path_on_host !== undefined) {
          if (!existsSync(inJail(String(body!.path_on_host))))
            return fault(res, `Unable to patch the block device: BackingFile(Os { code: 2, kind: NotFound }, "${String(body!.path_on_host)}")`);
          drives.set(String(body!.drive_id), String(body!.path_on_host));
        }
        break;
      case 'PUT /network-interfaces/{iface_id}':
        if (!existsSync(`/sys/class/net/${String(body!.host_dev_name)}`))
          return fault(res, `Could not create the network device: Open tap device failed: ${String(body!.host_dev_name)}`);
        taps.set(String(body!.iface_id), String(body!.host_dev_name));
        break;
      case 'PUT /vsock':
        if (!serveVsock(inJail(String(body!.uds_path))))
          return fault(res, `Cannot create backend for vsock device: UnixBind(Os { code: 98, kind: AddrInUse })`);
        vsockPath = String(body!.uds_path);
        break;
      case 'PUT /actions': {
        const action = body!.action_type;
        if (action === 'InstanceStart') {
          if (state !== 'Not started') return fault(res, 'The requested operation is not supported after starting the microVM.');
          if (!configured.has('/boot-source')) return fault(res, 'Cannot start microvm without kernel configuration.');
          state = 'Running';
          process.stdout.write(
            `[    0.000000] Linux version stand-in (Firecracker stand-in for tests; nothing boots)\nbanger firecracker stand-in: instance ${id} running\n`,
          );
          log('InstanceStart');
        } else if (action === 'SendCtrlAltDel') {
          if (state === 'Not started') return fault(res, 'The requested operation is not supported before starting the microVM.');
          log('SendCtrlAltDel: guest reboots (reboot=k), exiting');
          ok(res);
          setTimeout(() => shutdown(0), 200);
          return;
        }
        break;
      }
      case 'PATCH /vm':
        if (state === 'Not started') return fault(res, 'The requested operation is not supported before starting the microVM.');
        state = body!.state === 'Paused' ? 'Paused' : 'Running';
        break;
      case 'PUT /snapshot/create': {
        if (state !== 'Paused') return fault(res, 'Cannot create a snapshot: the microVM is not paused.');
        const vmstate = { standin: true, version: VERSION, id, machine, drives: Object.fromEntries(drives), taps: Object.fromEntries(taps), vsock: vsockPath };
        writeFileSync(inJail(body!.snapshot_path as string), JSON.stringify(vmstate));
        const mem = inJail(body!.mem_file_path as string);
        writeFileSync(mem, '');
        truncateSync(mem, (machine.memMiB ?? 0) * 1024 * 1024); // the guest's RAM, sparse here
        log(`snapshot created: ${String(body!.snapshot_path)}`);
        break;
      }
      case 'PUT /snapshot/load': {
        if ([...configured].some((p) => p !== '/logger' && p !== '/metrics'))
          return fault(res, 'Loading a microVM snapshot not allowed after configuring boot-specific resources.');
        const statePath = inJail(body!.snapshot_path as string);
        if (!existsSync(statePath)) return fault(res, 'Cannot open the snapshot file: No such file or directory (os error 2)');
        let vm: { version?: string; machine?: typeof machine; drives?: Record<string, string>; taps?: Record<string, string>; vsock?: string };
        try {
          vm = JSON.parse(readFileSync(statePath, 'utf8'));
        } catch {
          return fault(res, 'Load snapshot error: Failed to restore from snapshot: Cannot deserialize the microVM state');
        }
        if (vm.version !== VERSION) return fault(res, `Load snapshot error: Failed to restore from snapshot: Invalid snapshot version ${String(vm.version)}`);
        const backend = (body!.mem_backend as { backend_path?: string } | undefined)?.backend_path ?? (body!.mem_file_path as string | undefined);
        if (!backend || !existsSync(inJail(backend))) return fault(res, 'Load snapshot error: Failed to restore from snapshot: Cannot open the memory file');
        for (const [d, p] of Object.entries(vm.drives ?? {}))
          if (!existsSync(inJail(p)))
            return fault(res, `Load snapshot error: Failed to restore from snapshot: Block(BackingFile(Os { code: 2 }, "${p}")) (drive ${d})`);
        const overrides = (body!.network_overrides as { iface_id: string; host_dev_name: string }[] | undefined) ?? [];
        const newTaps = { ...(vm.taps ?? {}) };
        for (const o of overrides) {
          if (!(o.iface_id in newTaps)) return fault(res, `Load snapshot error: Invalid network override: unknown interface ${o.iface_id}`);
          newTaps[o.iface_id] = o.host_dev_name;
        }
        for (const t of Object.values(newTaps))
          if (!existsSync(`/sys/class/net/${t}`)) return fault(res, `Load snapshot error: Failed to restore from snapshot: Open tap device failed: ${t}`);
        const uds = (body!.vsock_override as { uds_path?: string } | undefined)?.uds_path ?? vm.vsock;
        if (uds && !serveVsock(inJail(uds)))
          return fault(res, 'Load snapshot error: Failed to restore from snapshot: vsock UnixBind(Os { code: 98, kind: AddrInUse })');
        Object.assign(machine, vm.machine ?? {});
        for (const [d, p] of Object.entries(vm.drives ?? {})) drives.set(d, p);
        for (const [i, t] of Object.entries(newTaps)) taps.set(i, t);
        vsockPath = uds;
        state = body!.resume_vm ? 'Running' : 'Paused';
        log(`snapshot loaded: ${String(body!.snapshot_path)} (${state})`);
        break;
      }
      default:
        return fault(res, `stand-in: ${method} ${route.template} is not implemented by the stand-in`);
    }
    configured.add(route.template === '/drives/{drive_id}' ? path : route.template);
    ok(res);
  }

  function serveVsock(udsPath: string): boolean {
    if (existsSync(udsPath)) return false;
    const srv = createNetServer((sock) => handshake(sock));
    srv.listen(udsPath);
    return true;
  }

  let hostPort = 1 << 30;
  function handshake(sock: Socket): void {
    let line = '';
    const timer = setTimeout(() => sock.destroy(), 2000); // CONN_REQUEST_TIMEOUT_MS
    const onData = (d: Buffer) => {
      line += d.toString('latin1');
      const nl = line.indexOf('\n');
      if (nl < 0) {
        if (line.length > 32) sock.destroy();
        return;
      }
      sock.off('data', onData);
      clearTimeout(timer);
      const m = /^connect (\d+)$/i.exec(line.slice(0, nl));
      const rest = Buffer.from(line.slice(nl + 1), 'latin1');
      if (!m || state !== 'Running' || Number(m[1]) !== 1024) return void sock.destroy();
      const agentBin = knobs.FC_STANDIN_AGENT ?? resolve(REPO, 'dist', 'guest', 'banger-vsock-agent');
      const agent = spawn(agentBin, ['--stdio'], { stdio: ['pipe', 'pipe', 'ignore'] });
      agent.on('error', () => sock.destroy());
      sock.write(`OK ${hostPort++}\n`);
      if (rest.length) agent.stdin.write(rest);
      sock.pipe(agent.stdin);
      agent.stdout.pipe(sock);
      sock.on('error', () => agent.kill());
      sock.on('close', () => agent.kill());
      agent.on('exit', () => sock.end());
    };
    sock.on('data', onData);
    sock.on('error', () => {});
  }

  function shutdown(code: number): void {
    // Like Firecracker, the API socket is left behind; the vsock UDS too.
    process.exit(code);
  }
  server.listen(apiSock);
  server.on('error', (e) => {
    process.stderr.write(`Failed to open the API socket at ${apiSock}: ${e.message}\n`);
    process.exit(1);
  });
}

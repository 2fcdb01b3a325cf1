import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { BangerError, ErrorCode } from '../../src/core/errors.js';
import { nullLogger } from '../../src/core/log.js';
import { defaultSources } from '../../src/guest/inject.js';
import { method, type MethodTable } from '../../src/rpc/protocol.js';
import { RpcServer } from '../../src/rpc/server.js';
import { agentPool, connectUnix } from '../../src/vms/agent.js';
import { vmMethods } from '../../src/daemon/handlers/vms.js';
import type { VmService } from '../../src/vms/service.js';

/**
 * A daemon without VMs: the daemon's real vm.* handlers on a real RpcServer, in front of the
 * real C guest agent serving on a Unix socket on this host (as test/integration/vm-agent-cli
 * does). VM 'box' runs (its "guest" is this host, as root, in a temp dir); VM 'off' is stopped;
 * any other name is E_NOT_FOUND. vm.create adds a running VM (no boot) and vm.rm forgets one.
 * `extra` adds methods (e.g. a slow one with progress).
 */
export const AGENT = defaultSources().agentPath;
export const agentMissing = existsSync(AGENT) ? undefined : 'agent not built (npm run build)';

export interface AgentDaemon {
  dir: string;
  socket: string;
  server: RpcServer;
  close(): Promise<void>;
}

export function vmRecord(name: string) {
  return {
    name,
    id: `id-${name}`,
    image: 'test-image',
    kernel: 'test-kernel',
    spec: { vcpu: 1, memoryMiB: 128, nat: false, firstBoot: false, rootDisk: { path: '/nonexistent', format: 'raw' }, ports: [] },
    desiredState: name === 'off' ? 'stopped' : 'running',
    state: name === 'off' ? 'stopped' : 'running',
    vmm: 'qemu',
    vmmReason: 'test',
    pid: null,
    tap: null,
    mac: null,
    ip: null,
    createdAt: new Date(0).toISOString(),
    startedAt: null,
    createDone: true,
    running: name !== 'off',
    dir: '/nonexistent',
    console: '/nonexistent',
  };
}

export async function startAgentDaemon(extra: MethodTable = {}): Promise<AgentDaemon> {
  const dir = mkdtempSync(join(tmpdir(), 'banger-agentd-'));
  const agentSock = join(dir, 'agent.sock');
  const agent: ChildProcess = spawn(AGENT, ['--unix', agentSock], { stdio: 'ignore' });
  for (let i = 0; i < 200 && !existsSync(agentSock); i++) await new Promise((r) => setTimeout(r, 20));
  const known = new Set(['box', 'off']);
  const get = (name: string) => {
    if (!known.has(name)) throw new BangerError(ErrorCode.NotFound, `vm '${name}' not found`, { hint: 'banger vm list' });
    return { name, id: `id-${name}`, vmm: 'qemu' };
  };
  const svc = {
    get,
    observe: async (vm: { name: string }) => ({ running: vm.name !== 'off' }),
    // Never paused here: exec/cp/ssh resume a paused VM first (vms/pause.ts), this stub has none.
    resumeIfPaused: async (name: string) => (get(name), undefined),
    driver: () => ({ openAgentStream: () => connectUnix(agentSock) }),
    handle: (vm: { id: string; name: string }) => ({ id: vm.id, name: vm.name }),
    show: async (name: string) => (get(name), { ...vmRecord(name), files: {}, cmdlineFirstBoot: null }),
    list: async () => [...known].map(vmRecord),
    logs: async (name: string, offset: number) => {
      get(name);
      const all = 'boot line 1\nboot line 2\n';
      return { data: all.slice(offset), offset: all.length, running: name !== 'off' };
    },
    create: async (p: { name?: string; image: string; ports?: string[] }, op: { progress(ev: { stage: string; message?: string }): void }) => {
      op.progress({ stage: 'boot', message: 'pretend boot' });
      const name = p.name ?? `vm-${known.size + 1}`;
      if (known.has(name)) throw new BangerError(ErrorCode.Exists, `vm '${name}' already exists`);
      known.add(name);
      return vmRecord(name);
    },
    rm: async (names: string[]) => {
      for (const n of names) get(n);
      for (const n of names) known.delete(n);
      return { removed: names };
    },
    ports: async (name: string) => (get(name), { name, ports: [{ proto: 'tcp', address: '0.0.0.0', port: 22 }], agent: true }),
  } as unknown as VmService;
  const status = method(z.object({}).strict(), async () => ({ version: 'agent-daemon', pid: process.pid }));
  const socket = join(dir, 'd.sock');
  const server = new RpcServer({ socketPath: socket, log: nullLogger, methods: { 'daemon.status': status, ...vmMethods(svc), ...extra } });
  await server.listen();
  return {
    dir,
    socket,
    server,
    async close() {
      agentPool.closeAll();
      await server.close();
      agent.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

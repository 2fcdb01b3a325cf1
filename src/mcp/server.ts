import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { Banger } from '../sdk/index.js';
import { BANGER_VERSION } from '../core/version.js';
import { MCP_DEFAULTS, type McpOptions } from './options.js';
import { Sandboxes } from './sandboxes.js';
import { registerTools } from './tools.js';

/** The console log a resource returns at most: its last this-many bytes. */
const LOG_TAIL = 256 * 1024;

/** A `banger mcp` server over an SDK client: tools (tools.ts) and each visible VM's log as a resource. */
export function createMcpServer(
  b: Banger,
  opts: Partial<McpOptions> = {},
  log: (line: string) => void = () => {},
): { server: McpServer; sandboxes: Sandboxes; options: McpOptions } {
  const o: McpOptions = { ...MCP_DEFAULTS, ...opts };
  const server = new McpServer(
    { name: 'banger', version: BANGER_VERSION },
    {
      instructions:
        'banger gives you disposable Linux sandboxes (microVMs). Create one with sandbox_create, run shell commands with sandbox_exec, move files with sandbox_write_file / sandbox_read_file, and remove it with sandbox_remove when done. Each sandbox is isolated: its own kernel, filesystem and network.',
    },
  );
  const boxes = new Sandboxes(b, o, log);
  registerTools(server, b, boxes, o);
  server.registerResource(
    'vm-log',
    new ResourceTemplate('banger://vm/{name}/log', {
      list: async () => ({
        resources: (await boxes.list()).map((v) => ({
          uri: `banger://vm/${v.name}/log`,
          name: `${v.name} console log`,
          mimeType: 'text/plain',
          description: `the serial console of sandbox ${v.name} (last ${LOG_TAIL / 1024} KiB)`,
        })),
      }),
    }),
    {
      title: 'Sandbox console log',
      description: "A sandbox's serial console output (boot messages, init-script output), its last 256 KiB.",
      mimeType: 'text/plain',
    },
    async (uri, vars) => {
      const name = String(vars.name ?? '');
      const vm = await boxes.get(name);
      let tail = '';
      for await (const chunk of vm.logs()) tail = (tail + chunk).slice(-LOG_TAIL);
      return { contents: [{ uri: uri.href, mimeType: 'text/plain', text: tail }] };
    },
  );
  return { server, sandboxes: boxes, options: o };
}

/**
 * `banger mcp`: serves MCP on stdin/stdout until the client closes stdin or a SIGINT/SIGTERM
 * arrives, then removes the VMs this server created (unless `keep`). Logs go to stderr.
 */
export async function runMcp(opts: Partial<McpOptions> & { socket?: string }): Promise<void> {
  const log = (line: string) => void process.stderr.write(`banger mcp: ${line}\n`);
  const b = await Banger.connect({ socket: opts.socket });
  const { server, sandboxes, options } = createMcpServer(b, opts, log);
  const transport = new StdioServerTransport();
  let finishing: Promise<void> | undefined;
  let done!: () => void;
  const ended = new Promise<void>((r) => (done = r));
  const finish = (why: string) =>
    (finishing ??= (async () => {
      log(`${why}; shutting down`);
      if (options.keep) {
        const kept = sandboxes.release();
        if (kept.length) log(`leaving sandboxes running (--keep): ${kept.join(', ')}`);
      } else await sandboxes.removeAll();
      await server.close().catch(() => {});
      b.close();
      done();
    })());
  transport.onclose = () => void finish('client closed the connection');
  process.stdin.once('end', () => void finish('stdin closed'));
  const onSignal = (sig: NodeJS.Signals) => () => void finish(`got ${sig}`);
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as NodeJS.Signals[]).map((s) => [s, onSignal(s)] as const);
  for (const [s, fn] of handlers) process.on(s, fn);
  b.rpc.onClose(() => log('lost the connection to bangerd: tools fail with E_DISCONNECTED until the server is restarted'));
  try {
    await server.connect(transport);
    log(`serving MCP on stdio (daemon ${b.socket}; ${options.all ? 'all VMs visible' : 'only its own VMs visible'}; max ${options.maxVms} VMs)`);
    await ended;
  } finally {
    for (const [s, fn] of handlers) process.off(s, fn);
  }
}

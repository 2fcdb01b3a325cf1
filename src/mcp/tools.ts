import { z } from 'zod';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { BangerError, ErrorCode } from '../core/errors.js';
import { Name } from '../rpc/schemas.js';
import type { Banger, ProgressEvent } from '../sdk/index.js';
import { CappedOutput } from './output.js';
import type { McpOptions } from './options.js';
import type { Sandboxes } from './sandboxes.js';

const GuestPath = z
  .string()
  .min(1)
  .max(4096)
  .refine((p) => p.startsWith('/') && !p.includes('\0'), 'must be an absolute path');
const SandboxName = Name.describe('the sandbox name (as sandbox_create returned it)');

const text = (t: string, structured?: Record<string, unknown>): CallToolResult => ({
  content: [{ type: 'text', text: t }],
  ...(structured ? { structuredContent: structured } : {}),
});

/** Any failure as an MCP tool error: the code, the message and the hint, never a crash. */
export function toolError(e: unknown): CallToolResult {
  const be = e instanceof BangerError ? e : new BangerError(ErrorCode.Internal, e instanceof Error ? e.message : String(e));
  const lines = [`error ${be.code}: ${be.message}`];
  if (be.hint) lines.push(`hint: ${be.hint}`);
  return {
    isError: true,
    content: [{ type: 'text', text: lines.join('\n') }],
    structuredContent: { error: { code: be.code, message: be.message, ...(be.hint ? { hint: be.hint } : {}) } },
  };
}

function guard<A>(fn: (args: A) => Promise<CallToolResult>): (args: A) => Promise<CallToolResult> {
  return async (args) => {
    try {
      return await fn(args);
    } catch (e) {
      return toolError(e);
    }
  };
}

type ToolExtra = RequestHandlerExtra<ServerRequest, ServerNotification>;

function guardExtra<A>(fn: (args: A, extra: ToolExtra) => Promise<CallToolResult>): (args: A, extra: ToolExtra) => Promise<CallToolResult> {
  return async (args, extra) => {
    try {
      return await fn(args, extra);
    } catch (e) {
      return toolError(e);
    }
  };
}

/** Registers the sandbox_* tools on `server`. */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: one registerTool call per MCP tool, each a schema and a short handler; the list is the server's tool catalogue
export function registerTools(server: McpServer, b: Banger, boxes: Sandboxes, o: McpOptions): void {
  server.registerTool(
    'sandbox_create',
    {
      title: 'Create a sandbox',
      description:
        `Create a new, isolated Linux sandbox (a microVM with its own kernel, root filesystem and network) and wait until it is ready for commands. ` +
        `Returns its name: pass that name to the other sandbox_* tools. Booting takes from a few seconds to a minute or two. ` +
        `At most ${o.maxVms} sandboxes exist at once; remove ones you no longer need with sandbox_remove. Each is removed automatically after its ttl.`,
      inputSchema: {
        image: Name.optional().describe(`image to boot (default ${o.defaultImage}); the daemon's images are listed by 'banger image list'`),
        name: Name.optional().describe('a name for the sandbox (default: generated)'),
        nat: z.boolean().optional().describe('give the sandbox outbound internet access through NAT (default false: no network beyond the host)'),
        ports: z
          .array(z.string().regex(/^(?:\d{1,5}:)?\d{1,5}(?:\/tcp)?$/, 'must be HOSTPORT:GUESTPORT'))
          .max(16)
          .optional()
          .describe('ports to publish on the host loopback, each "HOSTPORT:GUESTPORT", e.g. "8080:80"'),
        ttl: z
          .number()
          .int()
          .min(0)
          .max(7 * 24 * 3600)
          .optional()
          .describe(`seconds until the sandbox is removed automatically (default ${o.ttlSeconds}; 0 keeps it until this server exits)`),
      },
    },
    guardExtra(async (a: { image?: string; name?: string; nat?: boolean; ports?: string[]; ttl?: number }, extra: ToolExtra) => {
      const ttl = a.ttl ?? o.ttlSeconds;
      // Boot stages become MCP progress notifications when the client asked for them.
      const token = extra._meta?.progressToken;
      let n = 0;
      // Sent notifications are awaited before the result: a progress report the transport had
      // not written yet when the result went out would reach a client that has stopped listening.
      const sent: Promise<void>[] = [];
      const onProgress =
        token === undefined
          ? undefined
          : (ev: ProgressEvent) =>
              void sent.push(
                extra
                  .sendNotification({
                    method: 'notifications/progress',
                    params: { progressToken: token, progress: ++n, message: [ev.stage, ev.message].filter(Boolean).join(': ') },
                  })
                  .catch(() => {}),
              );
      const vm = await boxes.create(ttl, async () =>
        b.vms.create({ image: a.image ?? o.defaultImage, name: a.name, nat: a.nat, ports: a.ports, onProgress, signal: extra.signal }),
      );
      await Promise.all(sent);
      const ports = (vm.info.spec.ports ?? []).map((p) => `${p.hostIp}:${p.hostPort}->${p.guestPort}/tcp`);
      return text(
        `sandbox '${vm.name}' is running (image ${vm.info.image}${vm.info.ip ? `, ip ${vm.info.ip}` : ''}${ports.length ? `, ports ${ports.join(' ')}` : ''}${ttl > 0 ? `, removed after ${ttl} s` : ''})`,
        { name: vm.name, image: vm.info.image, ip: vm.info.ip, ports, ttlSeconds: ttl },
      );
    }),
  );

  server.registerTool(
    'sandbox_exec',
    {
      title: 'Run a shell command in a sandbox',
      description:
        `Run a shell command line in a sandbox (as root, through 'sh -c') and wait for it to finish. Returns the exit code, stdout and stderr. ` +
        `Output past ${o.maxOutputBytes} bytes per stream is cut in the middle (the note says how many bytes). ` +
        `The command is killed after 'timeout' seconds (default ${o.defaultExecSeconds}, at most ${o.maxExecSeconds}). stdin is empty; nothing is interactive.`,
      inputSchema: {
        name: SandboxName,
        command: z.string().min(1).max(60000).describe("the shell command line, e.g. 'cd /srv && make test 2>&1 | tail -50'"),
        cwd: GuestPath.optional().describe('working directory (absolute; default /root)'),
        env: z
          .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string().max(65536))
          .optional()
          .describe('extra environment variables'),
        timeout: z.number().int().min(1).max(o.maxExecSeconds).optional().describe(`seconds before the command is killed (default ${o.defaultExecSeconds})`),
      },
    },
    guard(async (a: { name: string; command: string; cwd?: string; env?: Record<string, string>; timeout?: number }) => {
      const vm = await boxes.get(a.name);
      const seconds = Math.min(a.timeout ?? o.defaultExecSeconds, o.maxExecSeconds);
      const out = new CappedOutput(o.maxOutputBytes);
      const err = new CappedOutput(o.maxOutputBytes);
      const proc = await vm.spawn('sh', { args: ['-c', a.command], cwd: a.cwd, env: a.env }).catch((e: unknown) => {
        throw e;
      });
      proc.stdin.end();
      proc.stdout.on('data', (d: Buffer) => out.push(d));
      proc.stderr.on('data', (d: Buffer) => err.push(d));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        proc.close(); // the daemon kills the process group
      }, seconds * 1000);
      let exitCode: number | null = null;
      try {
        exitCode = (await proc.wait()).exitCode;
      } catch (e) {
        if (!timedOut) throw e;
      } finally {
        clearTimeout(timer);
      }
      const body = [`exit code: ${timedOut ? 'none (killed)' : exitCode}`];
      if (timedOut) body.push(`timed out after ${seconds} s: the command was killed; output so far follows`);
      body.push(
        `--- stdout${out.cut ? ` (${out.cut} bytes cut)` : ''} ---`,
        out.text(),
        `--- stderr${err.cut ? ` (${err.cut} bytes cut)` : ''} ---`,
        err.text(),
      );
      const structured = { exitCode, timedOut, stdout: out.text(), stderr: err.text(), stdoutCutBytes: out.cut, stderrCutBytes: err.cut };
      if (timedOut)
        return { isError: true, content: [{ type: 'text', text: `error ${ErrorCode.Timeout}: ${body.join('\n')}` }], structuredContent: structured };
      return text(body.join('\n'), structured);
    }),
  );

  server.registerTool(
    'sandbox_write_file',
    {
      title: 'Write a file in a sandbox',
      description:
        'Create or replace a file in a sandbox with the given content (UTF-8 text, or base64 with encoding "base64"). Parent directories are created. Replaces the file atomically.',
      inputSchema: {
        name: SandboxName,
        path: GuestPath.describe('absolute path of the file in the sandbox'),
        content: z
          .string()
          .max(16 << 20)
          .describe('the file content'),
        encoding: z.enum(['utf8', 'base64']).optional().describe('how content is encoded (default utf8)'),
        mode: z
          .string()
          .regex(/^0?[0-7]{3,4}$/)
          .optional()
          .describe('permission bits in octal, e.g. "755" (default "644")'),
      },
    },
    guard(async (a: { name: string; path: string; content: string; encoding?: 'utf8' | 'base64'; mode?: string }) => {
      const vm = await boxes.get(a.name);
      const data = Buffer.from(a.content, a.encoding === 'base64' ? 'base64' : 'utf8');
      const dir = a.path.replace(/\/[^/]*\/?$/, '') || '/';
      await vm.files.mkdir(dir);
      await vm.files.write(a.path, data, { mode: a.mode ? parseInt(a.mode, 8) : undefined });
      return text(`wrote ${data.length} bytes to ${a.path}`, { path: a.path, bytes: data.length });
    }),
  );

  server.registerTool(
    'sandbox_read_file',
    {
      title: 'Read a file in a sandbox',
      description: `Read a file from a sandbox. Text comes back as is; a file that is not UTF-8 comes back base64. Only the first ${o.maxReadBytes} bytes are returned (the note says when the file is larger).`,
      inputSchema: { name: SandboxName, path: GuestPath.describe('absolute path of the file in the sandbox') },
    },
    guard(async (a: { name: string; path: string }) => {
      const vm = await boxes.get(a.name);
      const st = await vm.files.stat(a.path);
      if (st.type === 'dir') throw new BangerError(ErrorCode.Invalid, `${a.path} is a directory`, { hint: 'sandbox_list_files lists a directory' });
      let data: Buffer;
      let cut = 0;
      try {
        data = await vm.files.read(a.path, { maxBytes: o.maxReadBytes });
      } catch (e) {
        if (!(e instanceof BangerError && e.code === ErrorCode.TooLarge)) throw e;
        const r = await vm.exec('head', { args: ['-c', String(o.maxReadBytes), '--', a.path], maxBuffer: o.maxReadBytes });
        data = r.stdout;
        cut = Math.max(0, st.size - data.length);
      }
      const asText = data.toString('utf8');
      const isText = Buffer.from(asText, 'utf8').equals(data);
      const note = cut ? `\n[… file is ${st.size} bytes; only the first ${data.length} are shown …]` : '';
      return text(isText ? asText + note : `(binary file, base64)\n${data.toString('base64')}${note}`, {
        path: a.path,
        size: st.size,
        encoding: isText ? 'utf8' : 'base64',
        cutBytes: cut,
      });
    }),
  );

  server.registerTool(
    'sandbox_list_files',
    {
      title: 'List a directory in a sandbox',
      description: 'List the entries of a directory in a sandbox (not recursive): type, size, permissions and name, one per line.',
      inputSchema: { name: SandboxName, path: GuestPath.optional().describe('absolute path of the directory (default /root)') },
    },
    guard(async (a: { name: string; path?: string }) => {
      const vm = await boxes.get(a.name);
      const path = a.path ?? '/root';
      const entries = await vm.files.list(path);
      const max = 1000;
      const lines = entries
        .slice(0, max)
        .map((e) => `${e.type.padEnd(7)} ${String(e.size).padStart(10)} ${e.mode.toString(8).padStart(4, '0')} ${e.name}${e.type === 'dir' ? '/' : ''}`);
      if (entries.length > max) lines.push(`[… ${entries.length - max} more entries not shown …]`);
      return text(lines.length ? lines.join('\n') : '(empty directory)', {
        path,
        entries: entries.slice(0, max).map((e) => ({ name: e.name, type: e.type, size: e.size, mode: e.mode })),
      });
    }),
  );

  server.registerTool(
    'sandbox_ports',
    {
      title: 'Ports of a sandbox',
      description: 'Show the TCP/UDP ports programs listen on inside a sandbox, and which are published on the host (HOSTIP:HOSTPORT->GUESTPORT).',
      inputSchema: { name: SandboxName },
    },
    guard(async (a: { name: string }) => {
      const vm = await boxes.get(a.name);
      const p = await vm.ports();
      const published = (vm.info.spec.ports ?? []).map((x) => `${x.hostIp}:${x.hostPort}->${x.guestPort}/tcp`);
      const listening = p.ports.map((x) => `${x.proto} ${x.address}:${x.port}`);
      return text(`listening in the sandbox:\n${listening.join('\n') || '(none)'}\npublished on the host:\n${published.join('\n') || '(none)'}`, {
        listening: p.ports,
        published,
      });
    }),
  );

  server.registerTool(
    'sandbox_list',
    {
      title: 'List sandboxes',
      description: o.all ? 'List every sandbox (VM) of this banger daemon with its state.' : 'List the sandboxes this server created, with their state.',
      inputSchema: {},
    },
    guard(async () => {
      const vms = await boxes.list();
      const lines = vms.map(
        (v) =>
          `${v.name}  ${v.state}  image=${v.image}${v.ip ? ` ip=${v.ip}` : ''}${v.spec.ports?.length ? ` ports=${v.spec.ports.map((p) => `${p.hostPort}->${p.guestPort}`).join(',')}` : ''}`,
      );
      return text(lines.join('\n') || '(no sandboxes)', { sandboxes: vms.map((v) => ({ name: v.name, state: v.state, image: v.image, ip: v.ip })) });
    }),
  );

  server.registerTool(
    'sandbox_remove',
    {
      title: 'Remove a sandbox',
      description: 'Stop and delete a sandbox and everything in it. This cannot be undone.',
      inputSchema: { name: SandboxName },
      annotations: { destructiveHint: true },
    },
    guard(async (a: { name: string }) => {
      const removed = await boxes.remove(a.name);
      return text(`removed ${removed.join(', ') || a.name}`, { removed });
    }),
  );
}

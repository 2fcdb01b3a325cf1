import type { Command } from 'commander';
import { MCP_DEFAULTS, positiveInt } from '../../mcp/options.js';

interface McpFlags {
  all?: boolean;
  maxVms: number;
  maxExecSeconds: number;
  execTimeout: number;
  maxOutputBytes: number;
  maxReadBytes: number;
  image: string;
  ttl: number;
  keep?: boolean;
}

/**
 * `banger mcp`: a Model Context Protocol server on stdio for AI agents (src/mcp/), built on the
 * SDK. The MCP code is loaded only when this command runs, so other commands start no slower.
 */
export function registerMcpCommand(program: Command): void {
  const d = MCP_DEFAULTS;
  program
    .command('mcp')
    .description('serve the Model Context Protocol on stdio: sandbox_* tools for AI agents (create, exec, files, ports, remove)')
    .option('--all', 'see and act on every VM of the daemon, not only the ones this server created')
    .option('--max-vms <n>', 'most sandboxes this server keeps at once', positiveInt('--max-vms', 1), d.maxVms)
    .option('--max-exec-seconds <n>', 'longest a sandbox_exec may run (its timeout is capped at this)', positiveInt('--max-exec-seconds', 1), d.maxExecSeconds)
    .option('--exec-timeout <n>', 'sandbox_exec timeout in seconds when the call gives none', positiveInt('--exec-timeout', 1), d.defaultExecSeconds)
    .option(
      '--max-output-bytes <n>',
      'bytes of stdout and of stderr a sandbox_exec returns (the middle is cut)',
      positiveInt('--max-output-bytes', 256),
      d.maxOutputBytes,
    )
    .option('--max-read-bytes <n>', 'bytes sandbox_read_file returns at most', positiveInt('--max-read-bytes', 256), d.maxReadBytes)
    .option('--image <name>', 'image sandbox_create uses when the call names none', d.defaultImage)
    .option('--ttl <seconds>', 'default lifetime of a sandbox (0: until this server exits)', positiveInt('--ttl'), d.ttlSeconds)
    .option('--keep', "leave this server's sandboxes running when it exits (default: remove them)")
    .addHelpText(
      'after',
      '\nAn MCP client starts it as a subprocess, e.g. (Claude Desktop, Cursor, …):\n  { "mcpServers": { "banger": { "command": "banger", "args": ["mcp"] } } }\nLogs go to stderr; stdout carries the protocol. See README.md ("Use from an AI agent").',
    )
    .action(async (f: McpFlags) => {
      const { runMcp } = await import('../../mcp/server.js');
      await runMcp({
        all: !!f.all,
        maxVms: f.maxVms,
        maxExecSeconds: f.maxExecSeconds,
        defaultExecSeconds: Math.min(f.execTimeout, f.maxExecSeconds),
        maxOutputBytes: f.maxOutputBytes,
        maxReadBytes: f.maxReadBytes,
        defaultImage: f.image,
        ttlSeconds: f.ttl,
        keep: !!f.keep,
      });
    });
}

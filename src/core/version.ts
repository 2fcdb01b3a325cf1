/**
 * banger's version: the CLI's `--version`, the daemon's status, the SDK's and the MCP server's.
 * It is package.json's, and bin/banger answers `--version` with a copy of it before loading the
 * CLI; test/unit/cli-version.test.ts checks all three agree.
 */
export const BANGER_VERSION = '0.1.0';

/**
 * Firecracker's process exit codes in words (`FcExitCode`, src/vmm/src/lib.rs upstream), and
 * signals for a process that did not exit by itself.
 */
const CODES: Record<number, string> = {
  0: 'exited cleanly (the guest rebooted or shut down)',
  1: 'generic error (see its stderr and log)',
  2: 'unexpected error',
  148: 'killed by its seccomp filter (a forbidden system call)',
  149: 'SIGBUS (a bus error, often a truncated memory or disk file)',
  150: 'SIGSEGV (crashed)',
  151: 'SIGXFSZ (a file size limit was exceeded)',
  152: 'bad configuration',
  153: 'bad command-line arguments',
  154: 'SIGXCPU (the CPU time limit was exceeded)',
  155: 'SIGPIPE',
  156: 'SIGHUP',
  157: 'SIGILL (an illegal instruction)',
};

export function describeExit(code: number | null, signal?: NodeJS.Signals | null): string {
  if (signal) return `was killed by ${signal}`;
  if (code === null) return 'ended (exit status unknown: not our child any more)';
  return `exited with code ${code}: ${CODES[code] ?? 'unknown exit code'}`;
}

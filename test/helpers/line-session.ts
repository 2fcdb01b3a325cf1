import type { ChildProcess } from 'node:child_process';

/**
 * A line echo over a long-lived session (an SSH `cat`, a `vm exec -i cat`): `echo(word)` writes
 * the word and resolves once it came back on stdout, else rejects after `timeoutMs` naming it.
 * Tests use it to prove a session survives a change (a policy update, a restart).
 */
export function lineEcho(session: ChildProcess, timeoutMs: number): (word: string) => Promise<void> {
  let echoed = '';
  session.stdout!.on('data', (b: Buffer) => (echoed += b.toString()));
  return (word: string) =>
    new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`the session did not echo '${word}' within ${timeoutMs / 1000} s (exit ${session.exitCode})`)), timeoutMs);
      const check = () => {
        if (!echoed.includes(word)) return;
        clearTimeout(t);
        session.stdout!.off('data', check);
        resolve();
      };
      session.stdout!.on('data', check);
      session.stdin!.write(`${word}\n`);
    });
}

import { errorMessage } from './errors.js';

/**
 * An undo stack: every host side effect registers its undo the moment it happens; on failure
 * `unwind()` runs them newest-first. Undo steps must be idempotent (already gone = success).
 * Errors during unwind are collected and logged, never thrown over the original failure.
 */
export class UndoStack {
  private steps: { name: string; fn: () => Promise<void> | void }[] = [];
  constructor(private readonly log?: (msg: string, fields?: Record<string, unknown>) => void) {}

  push(name: string, fn: () => Promise<void> | void): void {
    this.steps.push({ name, fn });
  }

  /** Forget all steps (the operation succeeded and now owns its side effects). */
  commit(): void {
    this.steps = [];
  }

  async unwind(): Promise<string[]> {
    const failures: string[] = [];
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (e) {
        failures.push(`${s.name}: ${errorMessage(e)}`);
        this.log?.('undo step failed', { step: s.name, error: errorMessage(e) });
      }
    }
    return failures;
  }
}

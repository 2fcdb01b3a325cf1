import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BangerError, ErrorCode, isBangerError } from '../../src/core/errors.js';
import { StepRunner, stepOf, tagStep } from '../../src/core/steps.js';
import { UndoStack } from '../../src/core/undo.js';

test('StepRunner: progress start/done, timings, undo on the shared stack newest first', async () => {
  const events: string[] = [];
  const undone: string[] = [];
  const undo = new UndoStack();
  const logged: string[] = [];
  const steps = new StepRunner({
    undo,
    stage: (s, m, d) => events.push(`${s}${d ? ':done' : ''}${m ? ` ${m}` : ''}`),
    log: (m, f) => logged.push(`${m} ${f.step}`),
  });
  const n = await steps.run(
    'disk',
    async () => {
      steps.undo('disk-file', () => void undone.push('disk-file'));
      return 7;
    },
    { message: 'making', done: (r) => `made ${r}` },
  );
  assert.equal(n, 7);
  await steps.run('quiet', () => steps.undo('q', () => void undone.push('q')), { silent: true });
  await assert.rejects(
    steps.run(
      'vmm',
      async () => {
        steps.undo('vmm-proc', () => void undone.push('vmm-proc'));
        throw new BangerError(ErrorCode.Vmm, 'it broke', { hint: 'h', details: { x: 1 } });
      },
      { message: 'starting' },
    ),
    (e) => isBangerError(e, 'E_VMM') && e.message === 'it broke' && e.hint === 'h' && e.details?.step === 'vmm' && e.details?.x === 1,
  );
  assert.deepEqual(events, ['disk making', 'disk:done made 7', 'vmm starting']);
  assert.deepEqual(
    steps.timings.map((t) => `${t.name}:${t.ok}`),
    ['disk:true', 'quiet:true', 'vmm:false'],
  );
  assert.deepEqual(logged, ['step done disk', 'step done quiet', 'step failed vmm']);
  await undo.unwind();
  assert.deepEqual(undone, ['vmm-proc', 'q', 'disk-file']);
});

test('StepRunner: the innermost step wins; a plain Error becomes E_INTERNAL with the step; a cancelled signal stops before the step runs', async () => {
  const steps = new StepRunner({ undo: new UndoStack() });
  await assert.rejects(
    steps.run('outer', () => steps.run('inner', () => Promise.reject(new Error('boom')))),
    (e) => isBangerError(e, 'E_INTERNAL') && stepOf(e) === 'inner' && e.message === 'boom',
  );
  const ac = new AbortController();
  ac.abort();
  let ran = false;
  await assert.rejects(
    new StepRunner({ undo: new UndoStack(), signal: ac.signal }).run('late', () => void (ran = true)),
    (e) => isBangerError(e, 'E_CANCELLED') && stepOf(e) === 'late',
  );
  assert.equal(ran, false);
  const tagged = tagStep(new BangerError(ErrorCode.Exec, 'x', { details: { step: 'mkfs' } }), 'build');
  assert.equal(stepOf(tagged), 'mkfs');
  assert.equal(stepOf(new Error('step ssh: looks like a step but is not tagged')), undefined);
});

test('StepRunner tag: the operation words a failure (prefix, details) and the step is still tagged; current names the step started last', async () => {
  const steps = new StepRunner({
    undo: new UndoStack(),
    tag: (e, step) =>
      isBangerError(e) && stepOf(e) !== undefined
        ? e
        : new BangerError(ErrorCode.Exec, `image x: step ${step}: ${(e as Error).message}`, { details: { entry: 'x' } }),
  });
  assert.equal(steps.current, undefined);
  await steps.run('stage', () => undefined);
  assert.equal(steps.current, 'stage');
  await assert.rejects(
    steps.run('mkfs', () => Promise.reject(new Error('disk full'))),
    (e) => isBangerError(e, 'E_EXEC') && e.message === 'image x: step mkfs: disk full' && stepOf(e) === 'mkfs' && e.details?.entry === 'x',
  );
  assert.equal(steps.current, 'mkfs');
  // an error an inner step tagged already is the tag function's to keep
  await assert.rejects(
    steps.run('outer', () => steps.run('inner', () => Promise.reject(new Error('boom')))),
    (e) => stepOf(e) === 'inner' && e instanceof BangerError && e.message === 'image x: step inner: boom',
  );
});

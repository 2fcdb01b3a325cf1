import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildProgram, groupsFor } from '../../src/cli/main.js';

/**
 * The CLI loads only the command group a command needs (src/cli/main.ts `groups`). If a
 * top-level command is missing from that table, a call to it would load no group and fail as
 * "unknown command": every command the full program has must be reachable through its group.
 */
test('every top-level command is found through its own group, alone', async () => {
  const { program } = await buildProgram();
  const names = program.commands.map((c) => c.name());
  assert.ok(names.length >= 8, `the full program has its commands (${names.join(' ')})`);
  for (const name of names) {
    const wanted = groupsFor(['node', 'banger', name]);
    assert.equal(wanted.length, 1, `${name}: exactly one group owns it`);
    const { program: lean } = await buildProgram(['node', 'banger', '--json', name]);
    assert.ok(
      lean.commands.some((c) => c.name() === name),
      `${name} is registered when only its group is loaded`,
    );
  }
});

test('groupsFor: --version loads nothing; help, nothing or an unknown command loads every group', () => {
  assert.equal(groupsFor(['node', 'banger', '--version']).length, 0);
  assert.equal(groupsFor(['node', 'banger', '-V']).length, 0);
  const all = groupsFor(['node', 'banger']).length;
  assert.ok(all >= 6);
  assert.equal(groupsFor(['node', 'banger', '--help']).length, all);
  assert.equal(groupsFor(['node', 'banger', '--version', '--help']).length, all);
  assert.equal(groupsFor(['node', 'banger', 'no-such-command']).length, all);
  assert.deepEqual(groupsFor(['node', 'banger', '--json', 'ps', '--help'])[0].commands, groupsFor(['node', 'banger', 'vm'])[0].commands);
});

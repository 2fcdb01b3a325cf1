// A node:test reporter for scripts/run-tests.mjs: one JSON line per event the runner judges a tier
// by, read from node's own event stream (never from text a test could print):
//   {"kind":"summary", counts}            the runner's final summary (the test:summary without a file)
//   {"kind":"skip"|"todo", name, reason, failed}   each skipped or todo test, subtests included
//   {"kind":"empty", file}                a test file that registered no test (node reports such a
//                                         file as one passing test named by its path)
export default async function* events(source) {
  for await (const { type, data } of source) {
    if (type === 'test:summary' && data.file === undefined) {
      yield `${JSON.stringify({ kind: 'summary', counts: data.counts, success: data.success })}\n`;
    } else if (type === 'test:pass' || type === 'test:fail') {
      const failed = type === 'test:fail';
      const reason = (v) => (typeof v === 'string' && v !== '' ? v : '(no reason given)');
      if (data.todo !== undefined) yield `${JSON.stringify({ kind: 'todo', name: data.name, reason: reason(data.todo), failed })}\n`;
      else if (data.skip !== undefined) yield `${JSON.stringify({ kind: 'skip', name: data.name, reason: reason(data.skip), failed })}\n`;
      else if (!failed && data.nesting === 0 && /\.test\.js$/.test(data.name) && data.file?.endsWith(data.name)) {
        yield `${JSON.stringify({ kind: 'empty', file: data.name })}\n`;
      }
    }
  }
}

import type { OperationContext } from '../core/operation.js';
import { legacyAliases, methods, type MethodName, type ParsedParams, type Result } from './contract.js';
import { method, type MethodTable } from './protocol.js';

/** The daemon side of one contract method: validated params in, the contract's result out. */
export type Handler<M extends MethodName> = (params: ParsedParams<M>, op: OperationContext) => Promise<Result<M>>;

/** Handlers for every method whose name starts with `prefix` (e.g. "kernel."). */
export type HandlersFor<Prefix extends string> = { [M in Extract<MethodName, `${Prefix}${string}`>]: Handler<M> };

/**
 * Turns typed handlers into the server's method table: each gets the contract's params schema
 * (so the server validates before the handler runs), and each legacy alias of a bound method is
 * served too, with its result mapped to the old shape.
 */
export function bind(handlers: Partial<{ [M in MethodName]: Handler<M> }>): MethodTable {
  const table: MethodTable = {};
  for (const [name, handler] of Object.entries(handlers) as Array<[MethodName, Handler<MethodName>]>) {
    table[name] = method(methods[name].params, handler as never);
  }
  for (const [alias, a] of Object.entries(legacyAliases)) {
    const h = handlers[a.method as MethodName] as Handler<MethodName> | undefined;
    if (!h) continue;
    const toOld = a.result as (r: unknown) => unknown;
    table[alias] = method(methods[a.method].params, async (p, op) => toOld(await h(p as never, op)));
  }
  return table;
}

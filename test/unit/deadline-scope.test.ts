import { describe, expect, test, vi } from 'vitest';
import { QueryTimeoutError } from '../../src/drivers/errors.js';
import { statementSignal, withDeadline, withoutDeadline, currentDeadline } from '../../src/orm/deadline-scope.js';
import { DeadlineSignal } from '../../src/orm/deadline-signal.js';

describe('DeadlineSignal', () => {
  test('calls each listener once, in order, with the reason set; a removed or late listener is not called', () => {
    const signal = new DeadlineSignal();
    const calls: string[] = [];
    const first = (): void => void calls.push(`first:${String(signal.reason)}`);
    const removed = (): void => void calls.push('removed');
    signal.addEventListener('abort', first);
    signal.addEventListener('abort', first); // the same listener twice is one
    signal.addEventListener('abort', removed);
    signal.addEventListener('abort', () => calls.push('second'));
    signal.removeEventListener('abort', removed);
    expect(signal.aborted).toBe(false);
    signal.abort('why');
    signal.abort('again');
    signal.addEventListener('abort', () => calls.push('late'));
    expect(calls).toEqual(['first:why', 'second']);
    expect(signal).toMatchObject({ aborted: true, reason: 'why' });
  });
});

describe('statementSignal', () => {
  test('no deadline and no signal: nothing to listen to', () => {
    expect(statementSignal(undefined).signal).toBeUndefined();
  });

  test('aborts with QUERY_TIMEOUT when the deadline passes, and dispose() stops the timer', () => {
    vi.useFakeTimers();
    try {
      const passing = withDeadline({ timeoutMs: 50 }, () => statementSignal(currentDeadline()));
      const disposed = withDeadline({ timeoutMs: 50 }, () => statementSignal(currentDeadline()));
      disposed.dispose();
      vi.advanceTimersByTime(60);
      expect(passing.signal?.aborted).toBe(true);
      expect(passing.signal?.reason).toBeInstanceOf(QueryTimeoutError);
      expect((passing.signal?.reason as QueryTimeoutError).code).toBe('QUERY_TIMEOUT');
      expect(disposed.signal?.aborted).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  test("the scope's signal aborts the statement with its own reason; dispose() stops listening to it", () => {
    const controller = new AbortController();
    const statement = withDeadline({ timeoutMs: 10_000, signal: controller.signal }, () => statementSignal(currentDeadline()));
    const later = withDeadline({ timeoutMs: 10_000, signal: controller.signal }, () => statementSignal(currentDeadline()));
    later.dispose();
    const reason = new Error('client went away');
    controller.abort(reason);
    expect(statement.signal).toMatchObject({ aborted: true, reason });
    expect(later.signal?.aborted).toBe(false);
    statement.dispose();
  });

  test('a deadline already past gives a signal already aborted', () => {
    const deadline = { at: performance.now() - 1, timeoutMs: 5, signal: undefined };
    const statement = statementSignal(deadline);
    expect(statement.signal?.aborted).toBe(true);
    expect(statement.signal?.reason).toBeInstanceOf(QueryTimeoutError);
  });

  test('withoutDeadline steps out of the scope, and nested scopes only shorten the deadline', () => {
    withDeadline({ timeoutMs: 100 }, () => {
      const outer = currentDeadline()!;
      withDeadline({ timeoutMs: 10_000 }, () => expect(currentDeadline()!.at).toBe(outer.at));
      withDeadline({ timeoutMs: 10 }, () => expect(currentDeadline()!.at).toBeLessThan(outer.at));
      withoutDeadline(() => expect(currentDeadline()).toBeUndefined());
    });
  });
});

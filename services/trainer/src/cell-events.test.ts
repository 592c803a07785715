import { describe, expect, it } from 'vitest';
import type { CellProgress } from '@transferlab/runner';
import { TRACEPARENT, runnerLog, throttleProgress } from './cell-events.ts';

describe('throttleProgress', () => {
  it('passes epoch ends and phase changes at once, batches at most once per interval', () => {
    let now = 0;
    const passed: CellProgress[] = [];
    const report = throttleProgress((p) => passed.push(p), { intervalMs: 500, now: () => now });
    report({ phase: 'preparing' });
    report({ phase: 'training', batch: 1 }); // a new phase
    now = 100;
    report({ phase: 'training', batch: 2 }); // too soon
    report({ phase: 'training', batch: 3, epochDone: true }); // an epoch's end
    now = 550;
    report({ phase: 'training', batch: 4 }); // too soon after the epoch's end
    now = 700;
    report({ phase: 'training', batch: 5 });
    expect(passed.map((p) => p.batch ?? p.phase)).toEqual(['preparing', 1, 3, 5]);
  });
});

describe('runnerLog', () => {
  it("renames fields pino writes itself, so the logger's own stay intact", () => {
    const calls: unknown[][] = [];
    const log = { info: (...args: unknown[]) => calls.push(args) };
    runnerLog(log as never)('compute backend selected', { name: 'wasm', reason: 'r' });
    expect(calls).toEqual([[{ name_: 'wasm', reason: 'r' }, 'compute backend selected']]);
  });
});

describe('TRACEPARENT', () => {
  it('accepts the W3C form only', () => {
    expect(TRACEPARENT.test('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')).toBe(true);
    expect(TRACEPARENT.test('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7')).toBe(false);
    expect(TRACEPARENT.test('00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01')).toBe(false);
  });
});

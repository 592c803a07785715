// The trainer slots' rules on the in-process KV bucket (the same KeyValueStore contract as NATS
// KV; test/kubernetes-queueing.test.ts runs them on a real nats-server with real trainer Jobs).
import { describe, expect, it } from 'vitest';
import { createInProcessBus } from '@transferlab/platform';
import { TrainerSlots } from './trainer-slots.ts';

const options = { ttlMs: 10_000, pollMs: 20 };

describe('TrainerSlots', () => {
  it('lets at most `cap` cells hold a slot; a waiter hears who holds them and gets the next freed', async () => {
    const kv = await createInProcessBus().kv('slots');
    const slots = new TrainerSlots(async () => kv, 'one', 2, options);
    const signal = new AbortController().signal;
    const a = await slots.acquire({ sweepId: 's1', cellId: 'a' }, { signal });
    const b = await slots.acquire({ sweepId: 's2', cellId: 'b' }, { signal });
    let heard: string[] = [];
    const waiting = slots.acquire(
      { sweepId: 's1', cellId: 'c' },
      { signal, onWait: (holders) => (heard = holders.map((h) => `${h.sweepId}/${h.cellId}`)) },
    );
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(heard.sort()).toEqual(['s1/a', 's2/b']);
    expect(await slots.held()).toBe(2);
    await a!.release();
    const c = await waiting;
    expect(c).toBeDefined();
    expect(await slots.held()).toBe(2);
    await b!.release();
    await c!.release();
    expect(await slots.held()).toBe(0);
  });

  it('a slot kept at shutdown goes back to the same sweep and cell under a new controller, and to no one else', async () => {
    const kv = await createInProcessBus().kv('slots');
    const before = new TrainerSlots(async () => kv, 'old', 1, options);
    const signal = new AbortController();
    const held = await before.acquire({ sweepId: 's1', cellId: 'a' }, { signal: signal.signal });
    await held!.keep();

    const after = new TrainerSlots(async () => kv, 'new', 1, options);
    const other = new AbortController();
    let otherGot = false;
    void after
      .acquire({ sweepId: 's2', cellId: 'b' }, { signal: other.signal })
      .then((slot) => (otherGot = slot !== undefined));
    const adopted = await after.acquire({ sweepId: 's1', cellId: 'a' }, { signal: signal.signal });
    expect(adopted).toBeDefined();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(otherGot).toBe(false);
    other.abort();
    await adopted!.release();
  });

  it('refuses a cap below one', () => {
    expect(() => new TrainerSlots(async () => undefined as never, 'x', 0)).toThrow(/whole number >= 1/);
  });
});

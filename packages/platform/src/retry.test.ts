import { describe, expect, it } from 'vitest';
import { withBackoff } from './retry.ts';

class Flaky extends Error {
  code = 'TIMEOUT';
}
const transient = (error: unknown): boolean => error instanceof Flaky;

describe('withBackoff', () => {
  it('calls again while the failure is transient, and returns the first success', async () => {
    let calls = 0;
    const retries: number[] = [];
    const value = await withBackoff(
      async () => {
        calls++;
        if (calls < 4) throw new Flaky(`down (${calls})`);
        return 'up';
      },
      { transient, baseDelayMs: 1, maxDelayMs: 2, onRetry: (_, attempt) => retries.push(attempt) },
    );
    expect(value).toBe('up');
    expect(calls).toBe(4);
    expect(retries).toEqual([1, 2, 3]);
  });

  it('throws a failure that is not transient at once, as it came', async () => {
    let calls = 0;
    const fatal = new RangeError('bad request');
    await expect(
      withBackoff(
        async () => {
          calls++;
          throw fatal;
        },
        { transient, baseDelayMs: 1 },
      ),
    ).rejects.toBe(fatal);
    expect(calls).toBe(1);
  });

  it('gives up past the time bound with the last error, having kept trying until then', async () => {
    let calls = 0;
    const started = Date.now();
    const error = await withBackoff(
      async () => {
        calls++;
        throw new Flaky(`still down (${calls})`);
      },
      { transient, boundMs: 300, baseDelayMs: 20, maxDelayMs: 40 },
    ).catch((caught: unknown) => caught as Error);
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(Flaky);
    expect(error.message).toBe(`still down (${calls})`);
    expect(calls).toBeGreaterThan(3);
    expect(elapsed).toBeGreaterThanOrEqual(200);
    expect(elapsed).toBeLessThan(2_000);
  });

  it('stops at the attempt cap within the bound', async () => {
    let calls = 0;
    await expect(
      withBackoff(
        async () => {
          calls++;
          throw new Flaky('down');
        },
        { transient, attempts: 3, baseDelayMs: 1 },
      ),
    ).rejects.toBeInstanceOf(Flaky);
    expect(calls).toBe(3);
  });
});

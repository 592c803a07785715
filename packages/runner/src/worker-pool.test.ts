import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { JobFailedError, JobInterruptedError, WorkerPool } from './worker-pool.ts';

const entry = fileURLToPath(new URL('./fixtures/test-worker.ts', import.meta.url));

describe('WorkerPool', () => {
  let pool: WorkerPool | undefined;
  afterEach(async () => {
    await pool?.close();
    pool = undefined;
  });

  it('runs jobs in child processes, reuses them, and relays progress', async () => {
    const seen: unknown[] = [];
    pool = new WorkerPool({ size: 2, entry, onProgress: (_, progress) => seen.push(progress) });
    const outcomes = await Promise.all([1, 2, 3].map((value) => pool!.run(`job-${value}`, { action: 'echo', value })));
    const results = outcomes.map((outcome) => outcome.result as { echoed: number; pid: number });
    expect(results.map((result) => result.echoed)).toEqual([1, 2, 3]);
    expect(new Set(results.map((result) => result.pid)).size).toBe(2);
    expect(results.every((result) => result.pid !== process.pid)).toBe(true);
    expect(seen).toHaveLength(3);
    expect(pool.peakRssBytes).toBeGreaterThan(10 * 1024 * 1024);
  });

  it('reports a worker that dies mid-job and replaces it', async () => {
    pool = new WorkerPool({ size: 1, entry });
    const crash = pool.run('crashing', { action: 'crash' });
    await expect(crash).rejects.toThrow(/died with exit code 3 while running job crashing/);
    await expect(crash).rejects.toBeInstanceOf(JobFailedError);
    const next = await pool.run('after', { action: 'echo', value: 'ok' });
    expect((next.result as { echoed: string }).echoed).toBe('ok');
  });

  it('passes a job error back with its message', async () => {
    pool = new WorkerPool({ size: 1, entry });
    await expect(pool.run('failing', { action: 'fail' })).rejects.toThrow('bad batch in shard-00002.bin');
  });

  it('interrupts running jobs on request', async () => {
    pool = new WorkerPool({ size: 1, entry, onProgress: () => pool!.interrupt() });
    await expect(pool.run('waiting', { action: 'wait' })).rejects.toBeInstanceOf(JobInterruptedError);
  });
});

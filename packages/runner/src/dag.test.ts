import { describe, expect, it } from 'vitest';
import { runDag } from './dag.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('runDag', () => {
  it('runs nodes after their dependencies and never above the concurrency limit', async () => {
    const nodes = [
      { id: 'baseA', deps: [] },
      { id: 'baseB', deps: [] },
      { id: 'AnB', deps: ['baseA'] },
      { id: 'BnB', deps: ['baseB'] },
      { id: 'AnB+', deps: ['baseA'] },
    ];
    const finished: string[] = [];
    let active = 0;
    let maxActive = 0;
    const outcome = await runDag(
      nodes,
      async (id) => {
        const node = nodes.find((n) => n.id === id)!;
        for (const dep of node.deps) expect(finished).toContain(dep);
        active += 1;
        maxActive = Math.max(maxActive, active);
        await sleep(5);
        active -= 1;
        finished.push(id);
      },
      { concurrency: 2 },
    );
    expect(maxActive).toBe(2);
    expect(finished).toHaveLength(5);
    expect([...outcome.states.values()].every((state) => state === 'succeeded')).toBe(true);
  });

  it('blocks the dependents of a failed node and still runs the rest', async () => {
    const nodes = [
      { id: 'baseA', deps: [] },
      { id: 'baseB', deps: [] },
      { id: 'AnB', deps: ['baseA'] },
      { id: 'BnB', deps: ['baseB'] },
    ];
    const outcome = await runDag(
      nodes,
      async (id) => {
        if (id === 'baseA') throw new Error('diverged');
      },
      { concurrency: 1 },
    );
    expect(outcome.states.get('baseA')).toBe('failed');
    expect(outcome.states.get('AnB')).toBe('blocked');
    expect(outcome.states.get('BnB')).toBe('succeeded');
    expect(outcome.errors.get('baseA')?.message).toBe('diverged');
  });

  it('starts nothing new once told to stop', async () => {
    let stop = false;
    const started: string[] = [];
    const outcome = await runDag(
      [
        { id: 'a', deps: [] },
        { id: 'b', deps: [] },
        { id: 'c', deps: [] },
      ],
      async (id) => {
        started.push(id);
        stop = true;
        await sleep(1);
      },
      { concurrency: 1, shouldStop: () => stop },
    );
    expect(started).toEqual(['a']);
    expect(outcome.states.get('b')).toBe('pending');
  });

  it('refuses a dependency on an unknown node', async () => {
    await expect(runDag([{ id: 'AnB', deps: ['baseA'] }], async () => {}, { concurrency: 1 })).rejects.toThrow(
      /AnB depends on unknown node baseA/,
    );
  });
});

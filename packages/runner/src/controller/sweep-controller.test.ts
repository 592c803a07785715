// The controller's scheduling, retries, cancel and restart, with scripted steps in place of
// training (the real steps are exercised end to end in test/local-sweep.test.ts).
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Cell, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, SWEEPS_BUCKET, createInProcessBus } from '@transferlab/platform';
import type { StoredResult } from '../evaluate-cell.ts';
import { CellRunError, type CellSteps, type Executor } from './ports.ts';
import { SweepController } from './sweep-controller.ts';

const spec = validateSpec({
  name: 'scripted',
  dataset: { kind: 'mnist' },
  net: { kind: 'small', width: 0.25 },
  layers: [1, 2],
  arms: ['baseA', 'baseB', 'AnB', 'BnB+'],
  repeats: 1,
  concurrency: 2,
});

class ScriptedPorts implements CellSteps, Executor {
  readonly trained: string[] = [];
  active = 0;
  maxActive = 0;
  failures = new Map<string, number>();
  hold?: Promise<void>;
  async createSplit(): Promise<void> {}
  async transplant(): Promise<void> {}
  async evaluate(cell: Cell): Promise<StoredResult> {
    return { cellId: cell.id } as StoredResult;
  }
  readonly measured: string[] = [];
  async measure(cell: Cell): Promise<StoredResult> {
    this.measured.push(cell.name);
    return { cellId: cell.id } as StoredResult;
  }
  async run(cell: Cell, options: { signal: AbortSignal }): Promise<'trained' | 'interrupted'> {
    this.active += 1;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (this.hold) await Promise.race([this.hold, new Promise((r) => options.signal.addEventListener('abort', r))]);
      if (options.signal.aborted) return 'interrupted';
      const left = this.failures.get(cell.arm) ?? 0;
      if (left > 0) {
        this.failures.set(cell.arm, left - 1);
        throw new CellRunError(cell.id, `${cell.name}: OOMKilled`);
      }
      this.trained.push(cell.name);
      return 'trained';
    } finally {
      this.active -= 1;
    }
  }
  async close(): Promise<void> {}
}

async function setup() {
  const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-ctl-')));
  const bus = createInProcessBus();
  const ports = new ScriptedPorts();
  const controller = new SweepController({ store, bus, steps: ports, executor: ports });
  return { store, bus, ports, controller };
}

describe('SweepController', () => {
  it('watch: a snapshot, then each cell to its final state and the sweep closing, then the end', async () => {
    const { controller } = await setup();
    const sweep = await controller.start(spec, { specDir: '.' });
    const kinds: string[] = [];
    const succeeded = new Set<string>();
    let last: string | undefined;
    for await (const item of controller.watch(sweep.id, new AbortController().signal)) {
      kinds.push(item.kind);
      if (item.kind === 'snapshot' || item.kind === 'sweep') {
        for (const record of item.cells) if (record.state === 'succeeded') succeeded.add(record.cell.id);
        last = item.sweep.state;
      }
      if (item.kind === 'cell' && item.record.state === 'succeeded') succeeded.add(item.record.cell.id);
    }
    expect(kinds[0]).toBe('snapshot');
    expect(kinds.at(-1)).toBe('sweep');
    expect(last).toBe('succeeded');
    expect(succeeded.size).toBe(sweep.cellIds.length);
  });

  it('watch: ends without error when its signal aborts, and yields nothing for an unknown sweep', async () => {
    const { ports, controller } = await setup();
    ports.hold = new Promise(() => undefined);
    const sweep = await controller.start(spec, { specDir: '.' });
    const stop = new AbortController();
    const seen: string[] = [];
    const watching = (async () => {
      for await (const item of controller.watch(sweep.id, stop.signal)) seen.push(item.kind);
    })();
    await new Promise((resolve) => setTimeout(resolve, 50));
    stop.abort();
    await watching;
    expect(seen[0]).toBe('snapshot');
    const none: string[] = [];
    for await (const item of controller.watch('no-such-sweep', new AbortController().signal)) none.push(item.kind);
    expect(none).toEqual([]);
    await controller.cancel(sweep.id);
  });

  it('runs cells after their sources, within the concurrency limit, and records the sweep in KV', async () => {
    const { ports, controller } = await setup();
    const sweep = await controller.start(spec, { specDir: '.' });
    expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
    expect(ports.maxActive).toBeLessThanOrEqual(2);
    const bases = ['baseA seed=1', 'baseB seed=1'];
    expect(ports.trained.slice(0, 2).sort()).toEqual(bases);
    const current = await controller.get(sweep.id);
    expect(current?.cells.every((record) => record.state === 'succeeded')).toBe(true);
    expect((await controller.list()).map((s) => s.id)).toEqual([sweep.id]);
  });

  it('retries a failed cell and gives up after maxAttempts, blocking the cells that need it', async () => {
    const { ports, controller } = await setup();
    ports.failures.set('AnB', 1); // the first AnB cell to train fails once, then recovers
    ports.failures.set('baseB', 5); // never recovers within 3 attempts
    const sweep = await controller.start(spec, { specDir: '.', maxAttempts: 3 });
    expect((await controller.wait(sweep.id))?.state).toBe('failed');
    const cells = (await controller.get(sweep.id))!.cells;
    const byArm = (arm: string) => cells.filter((record) => record.cell.arm === arm);
    expect(byArm('baseB')[0]).toMatchObject({ state: 'failed', attempts: 3 });
    expect(byArm('baseB')[0]!.error).toMatch(/attempt 3\/3: .*OOMKilled/);
    expect(byArm('BnB+').every((record) => record.state === 'blocked')).toBe(true);
    expect(byArm('AnB').every((record) => record.state === 'succeeded')).toBe(true);
  });

  it('fails the sweep, naming the cell and the call, when its KV bookkeeping fails past the outage bound', async () => {
    const { bus, ports, controller } = await setup();
    // KV "gone for good" for the transfer cells' leases: the bases take theirs, then every
    // lease create fails as the NATS store does past its bound.
    const kv = await bus.kv(SWEEPS_BUCKET, { history: 5 });
    const create = kv.create.bind(kv);
    let leases = 0;
    kv.create = async (key, value) => {
      if (key.startsWith('lease.') && ++leases > 2) {
        throw new Error(`kv ${SWEEPS_BUCKET}: create '${key}' (25 attempts over 120.4 s): TIMEOUT`);
      }
      return create(key, value);
    };
    const sweep = await controller.start(spec, { specDir: '.' });
    const ended = await controller.wait(sweep.id);
    expect(ended?.state).toBe('failed');
    expect(ended?.error).toMatch(
      /^cell (AnB|BnB\+) n=\d seed=1 \([0-9a-f]{20}\): kv .*create 'lease\..*attempts over 120\.4 s\): TIMEOUT/,
    );
    // The failure stops the cells still running (a base net may be among them): none trains on.
    expect(ports.trained.length).toBeGreaterThan(0);
    expect(ports.trained.every((name) => name.startsWith('base'))).toBe(true);
  });

  it('cancels a running sweep and a new controller on the same bus carries on an unfinished one', async () => {
    const { store, bus, ports, controller } = await setup();
    let release!: () => void;
    ports.hold = new Promise((resolve) => (release = resolve));
    const cancelled = await controller.start(spec, { specDir: '.' });
    const unfinished = await controller.start({ ...spec, name: 'carried' }, { specDir: '.' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await controller.cancel(cancelled.id))?.state).toBe('cancelled');
    const cells = (await controller.get(cancelled.id))!.cells;
    expect(cells.every((record) => ['cancelled', 'succeeded'].includes(record.state))).toBe(true);

    // The controller goes away mid-sweep; another one, given only the bus and store, resumes.
    await controller.close();
    release();
    ports.hold = undefined;
    const successor = new SweepController({ store, bus, steps: ports, executor: ports });
    expect(await successor.resume()).toEqual([unfinished.id]);
    expect((await successor.wait(unfinished.id))?.state).toBe('succeeded');
    expect((await successor.get(cancelled.id))?.sweep.state).toBe('cancelled');
  });
});

describe('SweepController measure cells', () => {
  it('measures after the base nets (the replica too) through the measure step, training nothing for it', async () => {
    const { ports, controller } = await setup();
    const sweep = await controller.start(validateSpec({ ...spec, measures: { only: true } }), { specDir: '.' });
    expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
    expect(ports.trained.sort()).toEqual(['baseA seed=1', 'baseB seed=1', 'baseB2 seed=1']);
    expect(ports.measured).toEqual(['measureB seed=1']);
  });
});

describe('SweepController cell status', () => {
  it('records what the executor reports about a running attempt on the cell', async () => {
    const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-ctl-')));
    const bus = createInProcessBus();
    const ports = new ScriptedPorts();
    let report: ((sweepId: string, cellId: string, status: string) => void) | undefined;
    let release!: () => void;
    ports.hold = new Promise((resolve) => (release = resolve));
    const executor: Executor = {
      run: (cell, options) => ports.run(cell, options),
      onStatus: (listener) => (report = listener),
      close: async () => {},
    };
    const controller = new SweepController({ store, bus, steps: ports, executor });
    const sweep = await controller.start(spec, { specDir: '.' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    const running = (await controller.get(sweep.id))!.cells.find((record) => record.state === 'training')!;
    report!(sweep.id, running.cell.id, 'Unschedulable: 0/3 nodes have a free nvidia.com/gpu');
    await new Promise((resolve) => setTimeout(resolve, 20));
    const seen = (await controller.get(sweep.id))!.cells.find((record) => record.cell.id === running.cell.id)!;
    expect(seen.status).toBe('Unschedulable: 0/3 nodes have a free nvidia.com/gpu');
    release();
    ports.hold = undefined;
    expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
  });
});

describe('SweepController scheduling latency', () => {
  it('records one ready-to-launched latency per launched cell, without the wait for a free slot', async () => {
    const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-ctl-')));
    const ports = new ScriptedPorts();
    const slow = Object.assign(Object.create(ports) as ScriptedPorts, {
      // Each cell trains 200 ms under concurrency 1: later cells wait for the slot far longer than that.
      run: async (cell: Cell, options: { signal: AbortSignal }) => {
        await new Promise((resolve) => setTimeout(resolve, 200));
        return ports.run(cell, options);
      },
    });
    const latencies: number[] = [];
    const metrics = {
      cellCounts: () => undefined,
      queueDepth: () => undefined,
      cellFinished: () => undefined,
      cellScore: () => undefined,
      sweepFinished: () => undefined,
      cellLaunched: (_sweepId: string, seconds: number) => void latencies.push(seconds),
    };
    const controller = new SweepController({ store, bus: createInProcessBus(), steps: slow, executor: slow, metrics });
    const sweep = await controller.start(spec, { specDir: '.', concurrency: 1 });
    expect((await controller.wait(sweep.id))?.state).toBe('succeeded');
    const cells = (await controller.get(sweep.id))!.cells.length;
    expect(latencies).toHaveLength(cells);
    expect(Math.min(...latencies)).toBeGreaterThanOrEqual(0);
    // Six cells in a row at 200 ms each: counting the slot wait, the last would wait a second.
    expect(Math.max(...latencies)).toBeLessThan(0.15);
  });
});

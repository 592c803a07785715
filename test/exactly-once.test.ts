// Issue 9: six concurrent StartSweeps of one spec (and a second spec sharing cells), on two
// controllers over one real nats-server and one store, train every cell exactly once: a lease
// per cell id in the sweeps' KV bucket. The executor and cell steps are FAKES that record what
// runs when (the thing under test is the controller's scheduling, not training); the KV bucket,
// its compare-and-set and the store are real.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, validateSpec } from '@transferlab/experiment';
import { type Bus, LocalFolderStore, SWEEPS_BUCKET, connectNatsBus, createInProcessBus } from '@transferlab/platform';
import { cellKeys, putJson } from '@transferlab/runner';
import { CellLeases, leaseKey } from '@transferlab/runner/controller/cell-lease';
import type { CellSteps, Executor } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { REPO, freePort } from './support/servers.ts';

const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const spec = (name: string, layers: number[]) =>
  validateSpec({
    name,
    dataset: { kind: 'mnist' },
    split: { kind: 'random', trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
    net: { kind: 'small', width: 0.25 },
    training: { batchSize: 16, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 },
    layers,
    arms: ['baseA', 'baseB', 'AnB', 'BnB+'],
    repeats: 1,
    concurrency: 4,
  });

/** FAKE executor and steps: each "training" takes a while; the result lands in the real store. */
function recordingWorkers(store: LocalFolderStore) {
  const running = new Map<string, number>();
  const runs = new Map<string, number>();
  let overlaps = 0;
  const executor: Executor = {
    async run(cell: Cell) {
      const now = (running.get(cell.id) ?? 0) + 1;
      running.set(cell.id, now);
      if (now > 1) overlaps++;
      runs.set(cell.id, (runs.get(cell.id) ?? 0) + 1);
      await sleep(150 + Math.random() * 150);
      running.set(cell.id, running.get(cell.id)! - 1);
      return 'trained';
    },
    close: async () => undefined,
  };
  const steps: CellSteps = {
    createSplit: async () => undefined,
    transplant: async () => undefined,
    async evaluate(cell: Cell) {
      const result = { cellId: cell.id, name: cell.name, arm: cell.arm, kind: cell.kind, score: 0.5 };
      await putJson(store, cellKeys.result(cell.id), result);
      return result as never;
    },
    measure: async () => {
      throw new Error('these sweeps have no measure cells');
    },
  };
  return { executor, steps, runs, overlaps: () => overlaps };
}

describe('cell leases', () => {
  it('wait for a live holder, take over an expired one, and one left by an earlier run of the same sweep', async () => {
    const bus = createInProcessBus();
    const kv = await bus.kv(SWEEPS_BUCKET);
    const leases = new CellLeases(async () => kv, 'me', { ttlMs: 10_000, pollMs: 20 });
    const signal = new AbortController().signal;

    await kv.putJson(leaseKey('dead'), { holder: 'gone/other', sweepId: 'other', expiresAt: Date.now() - 1 });
    expect(await leases.acquire('dead', 's1', { signal })).toBeDefined();

    await kv.putJson(leaseKey('mine'), { holder: 'old/s1', sweepId: 's1', expiresAt: Date.now() + 60_000 });
    expect(await leases.acquire('mine', 's1', { signal })).toBeDefined();

    const other = new CellLeases(async () => kv, 'them', { ttlMs: 10_000, pollMs: 20 });
    const held = (await other.acquire('busy', 's2', { signal }))!;
    const waits: string[] = [];
    const waiting = leases.acquire('busy', 's1', { signal, onWait: (holder) => waits.push(holder.sweepId) });
    await sleep(200);
    expect(waits).toEqual(['s2']);
    await held.release();
    expect(await waiting).toBeDefined();

    const stop = new AbortController();
    const never = leases.acquire('busy', 's3', { signal: stop.signal });
    stop.abort();
    expect(await never).toBeUndefined();
    await bus.close();
  });
});

describe('concurrent starts over a real nats-server', () => {
  let natsUrl = process.env.TRANSFERLAB_NATS_URL ?? '';
  let natsDir: string | undefined;
  let work: string;
  const buses: Bus[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'tl-exactly-once-'));
    if (!natsUrl) {
      natsDir = join(work, 'nats');
      const { stdout } = await run('bash', [
        join(REPO, 'scripts/nats-start.sh'),
        natsDir,
        String(await freePort()),
        String(await freePort()),
      ]);
      natsUrl = /^TRANSFERLAB_NATS_URL=(\S+)$/m.exec(stdout)?.[1] ?? '';
    }
    expect(natsUrl, 'a nats-server to test against').not.toBe('');
  }, 60_000);

  afterAll(async () => {
    for (const bus of buses) await bus.close();
    if (natsDir) await run('bash', [join(REPO, 'scripts/nats-stop.sh'), natsDir]);
    await rm(work, { recursive: true, force: true });
  });

  it('six identical StartSweeps and one overlapping spec train each cell once, never twice at a time', async () => {
    const store = new LocalFolderStore(join(work, 'store'));
    const workers = recordingWorkers(store);
    const controllers: SweepController[] = [];
    for (const name of ['controller-1', 'controller-2']) {
      const bus = await connectNatsBus({ servers: natsUrl, name });
      buses.push(bus);
      controllers.push(
        new SweepController({
          store,
          bus,
          steps: workers.steps,
          executor: workers.executor,
          leases: { ttlMs: 5000, pollMs: 50 },
        }),
      );
    }
    const same = spec('same', [1, 2]);
    const overlapping = spec('overlapping', [2, 3]);
    const records = await Promise.all([
      ...Array.from({ length: 6 }, (_, i) => controllers[i % 2]!.start(same, { specDir: work })),
      controllers[1]!.start(overlapping, { specDir: work }),
    ]);
    const finals = await Promise.all(records.map((record, i) => controllers[i === 6 ? 1 : i % 2]!.wait(record.id)));
    for (const controller of controllers) await controller.close();

    expect(finals.map((sweep) => sweep?.state)).toEqual(Array(7).fill('succeeded'));
    const cells = new Set(records.flatMap((record) => record.cellIds));
    expect(cells.size).toBe(8); // 6 cells of the first spec, 2 more (n = 3) of the second
    expect(workers.overlaps()).toBe(0);
    expect([...workers.runs.values()].every((count) => count === 1)).toBe(true);
    expect(workers.runs.size).toBe(cells.size);
    console.log(
      `exactly once: 7 sweeps (6 identical), ${cells.size} distinct cells, ${[...workers.runs.values()].reduce((a, b) => a + b, 0)} trainings, ${workers.overlaps()} overlaps`,
    );
  }, 120_000);
});

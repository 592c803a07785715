import { availableParallelism } from 'node:os';
import type { Cell, CellResult, SweepPlan, SweepSpec } from '@transferlab/experiment';
import { expandGrid } from '@transferlab/experiment';
import {
  LocalFolderStore,
  type ObjectStore,
  cellProgressFilter,
  createInProcessBus,
  sweepEventFilter,
} from '@transferlab/platform';
import { cellKeys, getJson } from './cell-store.ts';
import { PoolPorts } from './controller/pool-ports.ts';
import type { CellState } from './controller/records.ts';
import { type SweepEvent, SweepController } from './controller/sweep-controller.ts';
import { readResult } from './evaluate-cell.ts';
import type { StoredResult } from './evaluate-cell.ts';
import type { CellProgress } from './train-cell.ts';

/** What the local sweep tells its watcher (the CLI's bars). */
export interface SweepObserver {
  splitProgress?(message: string): void;
  cellStarted?(cell: Cell): void;
  /** A cell starts from its checkpoint (an earlier run was interrupted): where it picks up, 0-based. */
  cellResumed?(cell: Cell, at: { epoch: number; batch: number; step: number }): void;
  cellProgress?(cell: Cell, progress: CellProgress): void;
  cellFinished?(cell: Cell, outcome: 'succeeded' | 'failed' | 'interrupted' | 'reused', error?: Error): void;
}

export interface LocalSweepOptions {
  /** Where relative dataset paths in the spec are resolved from. */
  specDir: string;
  storeRoot: string;
  /** Worker processes; default: the spec's concurrency, where 'auto' means one per core. */
  workers?: number;
  observer?: SweepObserver;
  signal?: AbortSignal;
}

export type LocalCellState = CellState | 'reused' | 'interrupted';

export interface LocalSweepOutcome {
  plan: SweepPlan;
  results: StoredResult[];
  states: Map<string, LocalCellState>;
  errors: Map<string, Error>;
  interrupted: boolean;
  /**
   * Set when the sweep itself failed (its dataset, split, store or bus), as opposed to one of
   * its cells: the cells it never reached stay pending, so the caller must not count on them.
   */
  sweepError?: string;
  /** The largest resident set of any worker process, in bytes. */
  peakWorkerRssBytes: number;
  workers: number;
}

/**
 * Where a cell's resumable checkpoint stands, read from its manifest and loop state alone (the
 * CLI's process loads no TensorFlow.js), or undefined when it has none.
 */
export async function checkpointPosition(
  store: ObjectStore,
  cellId: string,
): Promise<{ epoch: number; batch: number; step: number } | undefined> {
  const prefix = cellKeys.checkpoint(cellId);
  const manifest = await getJson<{ objects: { role: string; key: string }[] }>(store, `${prefix}/manifest.json`);
  const state = manifest?.objects.find((object) => object.role === 'state');
  if (!state) return undefined;
  const loop = await getJson<{ epoch: number; nextBatch: number; step: number }>(store, `${prefix}/${state.key}`);
  return loop && { epoch: loop.epoch, batch: loop.nextBatch, step: loop.step };
}

export function workerCount(spec: SweepSpec, override?: number): number {
  if (override !== undefined) return override;
  return spec.concurrency === 'auto' ? Math.max(1, availableParallelism()) : spec.concurrency;
}

/**
 * The sweep on one machine: the same controller as the cluster's, wired to embedded ports: a
 * local folder as the store, an in-process bus, and worker processes as the executor.
 * Finished cells are found by id in the store and not run again; cells interrupted by the
 * signal keep their checkpoints, and the next run resumes them.
 */
export async function runLocalSweep(spec: SweepSpec, options: LocalSweepOptions): Promise<LocalSweepOutcome> {
  const plan = expandGrid(spec);
  const store = new LocalFolderStore(options.storeRoot);
  const bus = createInProcessBus();
  const workers = workerCount(spec, options.workers);
  const observer = options.observer ?? {};
  const ports = new PoolPorts(store, {
    storeRoot: options.storeRoot,
    bus,
    workers,
    onSplitProgress: (message) => observer.splitProgress?.(message),
  });
  const controller = new SweepController({ store, bus, steps: ports, executor: ports });
  const byId = new Map(plan.cells.map((cell) => [cell.id, cell]));
  const started = new Set<string>();
  let interrupted = options.signal?.aborted ?? false;

  // Finished cells are announced up front, as the controller will not run them.
  for (const cell of plan.cells) {
    if (await readResult(store, cell.id)) {
      started.add(cell.id);
      observer.cellFinished?.(cell, 'reused');
    }
  }
  const finished = new Set<string>(started);
  const subscriptions = [
    await bus.subscribe(cellProgressFilter(), (message) => {
      const cellId = message.subject.split('.').pop()!;
      const cell = byId.get(cellId);
      if (cell) observer.cellProgress?.(cell, message.json<CellProgress>());
    }),
    await bus.subscribe(sweepEventFilter(), (message) => {
      const event = message.json<SweepEvent>();
      const cell = event.cellId ? byId.get(event.cellId) : undefined;
      if (!cell || !event.cellState) return;
      if (['transplanting', 'training'].includes(event.cellState) && !started.has(cell.id)) {
        started.add(cell.id);
        observer.cellStarted?.(cell);
        void checkpointPosition(store, cell.id).then(
          (at) => at && observer.cellResumed?.(cell, at),
          () => undefined,
        );
      } else if (event.cellState === 'succeeded' && started.has(cell.id) && !finished.has(cell.id)) {
        finished.add(cell.id);
        observer.cellFinished?.(cell, 'succeeded');
      } else if (event.cellState === 'failed') {
        finished.add(cell.id);
        observer.cellFinished?.(cell, 'failed', new Error(event.message ?? 'failed'));
      }
    }),
  ];

  const onAbort = (): void => {
    interrupted = true;
    void controller.close();
  };
  options.signal?.addEventListener('abort', onAbort);
  let sweepId: string | undefined;
  try {
    if (!interrupted) {
      const record = await controller.start(spec, { specDir: options.specDir, concurrency: workers });
      sweepId = record.id;
      await controller.wait(sweepId);
    }
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await controller.close();
    for (const subscription of subscriptions) await subscription.unsubscribe();
  }

  const current = sweepId ? await controller.get(sweepId) : undefined;
  await bus.close();
  const states = new Map<string, LocalCellState>();
  const errors = new Map<string, Error>();
  const results: StoredResult[] = [];
  for (const cell of plan.cells) {
    const record = current?.cells.find((r) => r.cell.id === cell.id);
    let state: LocalCellState = record?.state ?? 'pending';
    if (record?.reused) state = 'reused';
    else if (interrupted && (state === 'training' || state === 'transplanting' || state === 'evaluating')) {
      state = 'interrupted';
      observer.cellFinished?.(cell, 'interrupted');
    }
    states.set(cell.id, state);
    if (record?.error && state !== 'succeeded') errors.set(cell.id, new Error(record.error));
    const result = await readResult(store, cell.id);
    if (result) results.push(result);
  }
  if (current?.sweep.error) errors.set(current.sweep.id, new Error(current.sweep.error));
  const sweepError = current?.sweep.state === 'failed' && current.sweep.error ? current.sweep.error : undefined;
  return {
    plan,
    results,
    states,
    errors,
    interrupted,
    ...(sweepError === undefined ? {} : { sweepError }),
    peakWorkerRssBytes: ports.pool.peakRssBytes,
    workers,
  };
}

export type { CellResult };

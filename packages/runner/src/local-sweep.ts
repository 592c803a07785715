import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Cell, CellResult, SweepPlan, SweepSpec } from '@transferlab/experiment';
import { expandGrid } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import type { CellJob } from './cell-worker.ts';
import { type NodeState, runDag } from './dag.ts';
import { ensureSplits } from './prepare-split.ts';
import { type CellProgress, type StoredResult, readResult } from './run-cell.ts';
import { JobInterruptedError, WorkerPool } from './worker-pool.ts';

/** What the local sweep tells its watcher (the CLI's bars). */
export interface SweepObserver {
  splitProgress?(message: string): void;
  cellStarted?(cell: Cell): void;
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

export interface LocalSweepOutcome {
  plan: SweepPlan;
  results: StoredResult[];
  states: Map<string, NodeState | 'reused'>;
  errors: Map<string, Error>;
  interrupted: boolean;
  /** The largest resident set of any worker process, in bytes. */
  peakWorkerRssBytes: number;
  workers: number;
}

export function workerCount(spec: SweepSpec, override?: number): number {
  if (override !== undefined) return override;
  return spec.concurrency === 'auto' ? Math.max(1, availableParallelism()) : spec.concurrency;
}

/**
 * The sweep on one machine: splits made in this process, cells in worker processes in
 * dependency order. Finished cells are found by id in the store and not run again.
 */
export async function runLocalSweep(spec: SweepSpec, options: LocalSweepOptions): Promise<LocalSweepOutcome> {
  const plan = expandGrid(spec);
  const store = new LocalFolderStore(options.storeRoot);
  const observer = options.observer ?? {};
  const workers = workerCount(spec, options.workers);

  await ensureSplits(store, plan.splits, {
    specDir: options.specDir,
    onReading: (task, p) =>
      observer.splitProgress?.(`reading dataset for split ${task.id}: ${p.done}/${p.total} images`),
    onWriting: (task, p) => observer.splitProgress?.(`writing split ${task.id}: ${p.images}/${p.totalImages} images`),
  });

  const results = new Map<string, StoredResult>();
  const states = new Map<string, NodeState | 'reused'>();
  for (const cell of plan.cells) {
    const stored = await readResult(store, cell.id);
    if (stored) {
      results.set(cell.id, stored);
      states.set(cell.id, 'reused');
      observer.cellFinished?.(cell, 'reused');
    }
  }
  const todo = plan.cells.filter((cell) => !results.has(cell.id));
  const byId = new Map(plan.cells.map((cell) => [cell.id, cell]));

  const pool = new WorkerPool({
    size: Math.min(workers, Math.max(1, todo.length)),
    entry: fileURLToPath(new URL('./cell-worker.ts', import.meta.url)),
    onProgress: (cellId, progress) => observer.cellProgress?.(byId.get(cellId)!, progress as CellProgress),
  });
  let interrupted = options.signal?.aborted ?? false;
  const onAbort = (): void => {
    interrupted = true;
    pool.interrupt();
  };
  options.signal?.addEventListener('abort', onAbort);
  let outcome;
  try {
    outcome = await runDag(
      todo.map((cell) => ({ id: cell.id, deps: cell.deps.filter((dep) => !results.has(dep)) })),
      async (cellId) => {
        const cell = byId.get(cellId)!;
        observer.cellStarted?.(cell);
        try {
          const job: CellJob = { cell, storeRoot: options.storeRoot };
          const { result } = await pool.run(cellId, job);
          if (result === undefined) throw new JobInterruptedError(cellId);
          results.set(cellId, result as StoredResult);
          observer.cellFinished?.(cell, 'succeeded');
        } catch (error) {
          const err = error as Error;
          observer.cellFinished?.(cell, err instanceof JobInterruptedError ? 'interrupted' : 'failed', err);
          throw err;
        }
      },
      {
        concurrency: workers,
        isInterrupt: (error) => error instanceof JobInterruptedError,
        shouldStop: () => interrupted,
      },
    );
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await pool.close();
  }
  for (const [id, state] of outcome.states) states.set(id, state);
  return {
    plan,
    results: plan.cells.flatMap((cell) => results.get(cell.id) ?? []),
    states,
    errors: outcome.errors,
    interrupted,
    peakWorkerRssBytes: pool.peakRssBytes,
    workers,
  };
}

export type { CellResult };

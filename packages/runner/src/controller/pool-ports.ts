import { fileURLToPath } from 'node:url';
import type { Cell } from '@transferlab/experiment';
import { type Bus, type ObjectStore, cellProgressSubject } from '@transferlab/platform';
import type { CellJob } from '../cell-worker.ts';
import type { StoredResult } from '../evaluate-cell.ts';
import { ensureSplits } from '../prepare-split.ts';
import { JobInterruptedError, WorkerPool } from '../worker-pool.ts';
import { type CellSteps, type Executor } from './ports.ts';

export const CELL_WORKER_ENTRY = fileURLToPath(new URL('../cell-worker.ts', import.meta.url));

/**
 * The embedded executor and cell steps over one pool of worker processes: every step that
 * needs TensorFlow.js runs in a worker, so the controller's process stays small. Training
 * progress is relayed from the worker onto the bus, as a trainer pod publishes it.
 */
export class PoolPorts implements Executor, CellSteps {
  readonly pool: WorkerPool;
  private readonly sweepOfJob = new Map<string, string>();

  constructor(
    private readonly store: ObjectStore,
    private readonly options: {
      storeRoot: string;
      bus: Bus;
      workers: number;
      onSplitProgress?: (message: string) => void;
    },
  ) {
    this.pool = new WorkerPool({
      size: options.workers,
      entry: CELL_WORKER_ENTRY,
      onProgress: (jobId, progress) => {
        const sweepId = this.sweepOfJob.get(jobId);
        const cellId = jobId.split(':')[1]!;
        if (sweepId) void options.bus.publish(cellProgressSubject(sweepId, cellId), progress).catch(() => undefined);
      },
    });
  }

  private async job(step: CellJob['step'], cell: Cell, sweepId: string): Promise<unknown> {
    const jobId = `${step}:${cell.id}`;
    this.sweepOfJob.set(jobId, sweepId);
    try {
      const payload: CellJob = { step, cell, storeRoot: this.options.storeRoot };
      return (await this.pool.run(jobId, payload)).result;
    } finally {
      this.sweepOfJob.delete(jobId);
    }
  }

  async createSplit(task: Parameters<CellSteps['createSplit']>[0], options: { specDir: string }): Promise<void> {
    const say = this.options.onSplitProgress;
    await ensureSplits(this.store, [task], {
      specDir: options.specDir,
      onReading: (_, p) => say?.(`reading dataset for split ${task.id}: ${p.done}/${p.total} images`),
      onWriting: (_, p) => say?.(`writing split ${task.id}: ${p.images}/${p.totalImages} images`),
    });
  }

  async transplant(cell: Cell, options: { sweepId: string }): Promise<void> {
    await this.job('transplant', cell, options.sweepId);
  }

  async evaluate(cell: Cell, options: { sweepId: string }): Promise<StoredResult> {
    return (await this.job('evaluate', cell, options.sweepId)) as StoredResult;
  }

  async measure(cell: Cell, options: { sweepId: string }): Promise<StoredResult> {
    return (await this.job('measure', cell, options.sweepId)) as StoredResult;
  }

  async run(cell: Cell, options: { sweepId: string; signal: AbortSignal }): Promise<'trained' | 'interrupted'> {
    const onAbort = (): void => this.pool.interrupt();
    options.signal.addEventListener('abort', onAbort);
    try {
      const result = await this.job('train', cell, options.sweepId);
      return result === null ? 'interrupted' : 'trained';
    } catch (error) {
      if (error instanceof JobInterruptedError) return 'interrupted';
      throw error;
    } finally {
      options.signal.removeEventListener('abort', onAbort);
    }
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

import type { Cell, SplitTask } from '@transferlab/experiment';
import type { StoredResult } from '../evaluate-cell.ts';

/**
 * What the controller asks of the other services. In one process these are function calls
 * (`inProcessSteps`); across processes they are gRPC clients of the dataset-splitter,
 * transplanter and evaluator.
 */
export interface CellSteps {
  createSplit(task: SplitTask, options: { specDir: string; sweepId: string }): Promise<void>;
  transplant(cell: Cell, options: { sweepId: string }): Promise<void>;
  evaluate(cell: Cell, options: { sweepId: string }): Promise<StoredResult>;
  /** A measure cell (kind `measure`): CKA and LogME from its base nets; no training. */
  measure(cell: Cell, options: { sweepId: string }): Promise<StoredResult>;
}

/** Why a trainer run ended without a trained net, in words a user can act on. */
export class CellRunError extends Error {
  constructor(
    readonly cellId: string,
    message: string,
    /** A retry may succeed (e.g. the process was killed); false for e.g. a bad spec. */
    readonly retryable = true,
  ) {
    super(message);
    this.name = 'CellRunError';
  }
}

/**
 * Runs trainers: one per cell. Local child processes here; Kubernetes Jobs on a cluster.
 * `run` resolves when the trainer stored the cell's trained net, 'interrupted' when it stopped
 * on request with its checkpoint saved, and rejects when it failed.
 */
export interface Executor {
  run(
    cell: Cell,
    options: { sweepId: string; attempt: number; signal: AbortSignal },
  ): Promise<'trained' | 'interrupted'>;
  /**
   * Where the executor reports what a running attempt waits on or does (a pod that cannot be
   * scheduled, an image being pulled), so a user sees it on the cell. Optional.
   */
  onStatus?(listener: (sweepId: string, cellId: string, status: string) => void): void;
  /**
   * From now on an abort leaves the trainers running (for the next controller to adopt) instead
   * of stopping them. Only executors whose trainers outlive the controller have it.
   */
  detach?(): void;
  close(): Promise<void>;
}

import type { Cell, SweepSpec } from '@transferlab/experiment';

/** A sweep's state as kept in the KV bucket (`sweep.<id>`). The controller keeps no other state. */
export interface SweepRecord {
  id: string;
  name: string;
  spec: SweepSpec;
  /** The spec as the user wrote it, when it came as text: what GetSweep shows back. */
  specText?: string;
  /** Where relative dataset paths in the spec resolve. */
  specDir: string;
  state: SweepState;
  /** Retries of a failed cell: each resumes from the cell's last checkpoint. */
  maxAttempts: number;
  cellIds: string[];
  createdAt: string;
  updatedAt: string;
  error?: string;
}

export type SweepState = 'splitting' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** One cell of a sweep (`cell.<sweepId>.<cellId>`). */
export interface CellRecord {
  cell: Cell;
  state: CellState;
  attempts: number;
  /** True when a finished cell with the same id was found in the store and not run again. */
  reused?: boolean;
  error?: string;
  /** What the executor last said about the running attempt (e.g. why its pod is pending). */
  status?: string;
  startedAt?: string;
  finishedAt?: string;
}

export type CellState =
  'pending' | 'transplanting' | 'training' | 'evaluating' | 'succeeded' | 'failed' | 'blocked' | 'cancelled';

export const ACTIVE_CELL_STATES: readonly CellState[] = ['transplanting', 'training', 'evaluating'];
export const FINAL_CELL_STATES: readonly CellState[] = ['succeeded', 'failed', 'blocked', 'cancelled'];
export const FINAL_SWEEP_STATES: readonly SweepState[] = ['succeeded', 'failed', 'cancelled'];

export function isFinalSweep(state: SweepState): boolean {
  return FINAL_SWEEP_STATES.includes(state);
}

/** Counts by state, for summaries and watch events. */
export function countCells(records: readonly CellRecord[]): Record<CellState, number> {
  const counts: Record<CellState, number> = {
    pending: 0,
    transplanting: 0,
    training: 0,
    evaluating: 0,
    succeeded: 0,
    failed: 0,
    blocked: 0,
    cancelled: 0,
  };
  for (const record of records) counts[record.state] += 1;
  return counts;
}

/**
 * The cells to start next: of the candidates (cells waiting to run), those with every
 * dependency succeeded, within the free slots. Candidates behind a failed, blocked or cancelled
 * dependency are returned as blocked; `ready` counts every candidate whose dependencies all
 * succeeded, started or not (the queue depth is ready minus started).
 */
export function schedule(
  candidates: Iterable<CellRecord>,
  stateOf: (cellId: string) => CellState | undefined,
  slots: number,
): { start: string[]; block: string[]; ready: number } {
  const block: string[] = [];
  const start: string[] = [];
  let ready = 0;
  for (const record of candidates) {
    let succeeded = true;
    let stopped = false;
    for (const dep of record.cell.deps) {
      const state = stateOf(dep);
      if (state === 'failed' || state === 'blocked' || state === 'cancelled') stopped = true;
      if (state !== 'succeeded') succeeded = false;
    }
    if (stopped) {
      block.push(record.cell.id);
    } else if (succeeded) {
      ready += 1;
      if (start.length < slots) start.push(record.cell.id);
    }
  }
  return { start, block, ready };
}

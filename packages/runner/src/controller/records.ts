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
 * The cells to start next: pending, with every dependency succeeded, within the concurrency
 * left. Pending cells behind a failed, blocked or cancelled dependency are returned as blocked.
 */
export function schedule(
  records: ReadonlyMap<string, CellRecord>,
  concurrency: number,
): { start: string[]; block: string[] } {
  const block: string[] = [];
  const start: string[] = [];
  let active = 0;
  for (const record of records.values()) if (ACTIVE_CELL_STATES.includes(record.state)) active += 1;
  const stateOf = (id: string): CellState | undefined => records.get(id)?.state;
  for (const [id, record] of records) {
    if (record.state !== 'pending') continue;
    const deps = record.cell.deps.map(stateOf);
    if (deps.some((state) => state === 'failed' || state === 'blocked' || state === 'cancelled')) {
      block.push(id);
    } else if (deps.every((state) => state === 'succeeded') && active < concurrency) {
      start.push(id);
      active += 1;
    }
  }
  return { start, block };
}

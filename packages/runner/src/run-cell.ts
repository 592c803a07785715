import type { Cell } from '@transferlab/experiment';
import type { ObjectStore } from '@transferlab/platform';
import { type StoredResult, evaluateCell, readResult } from './evaluate-cell.ts';
import { type TrainCellOptions, trainCell } from './train-cell.ts';
import { transplantCell } from './transplant-cell.ts';

export type { StoredResult } from './evaluate-cell.ts';
export { readResult } from './evaluate-cell.ts';
export type { CellProgress } from './train-cell.ts';

/**
 * One cell from start to result, in one process: transplant (transfer and random cells),
 * train, evaluate. Each step is idempotent and resumable, so a cell stopped anywhere carries
 * on from where it was. Returns undefined when interrupted.
 */
export async function runCell(
  store: ObjectStore,
  cell: Cell,
  options: TrainCellOptions = {},
): Promise<StoredResult | undefined> {
  const existing = await readResult(store, cell.id);
  if (existing) return existing;
  if (cell.kind !== 'base') await transplantCell(store, cell);
  const trained = await trainCell(store, cell, options);
  if (!trained) return undefined;
  options.progress?.({ phase: 'evaluating' });
  return evaluateCell(store, cell);
}

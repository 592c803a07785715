// The worker process of the embedded executor: runs the cell steps the parent sends, one at a time.
import type { Cell } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { evaluateCell } from './evaluate-cell.ts';
import { measureCell } from './measure-cell.ts';
import { trainCell } from './train-cell.ts';
import { transplantCell } from './transplant-cell.ts';
import { serveJobs } from './worker-pool.ts';

export interface CellJob {
  step: 'transplant' | 'train' | 'evaluate' | 'measure';
  cell: Cell;
  storeRoot: string;
}

serveJobs(async (payload, { signal, progress }) => {
  const job = payload as CellJob;
  const store = new LocalFolderStore(job.storeRoot);
  switch (job.step) {
    case 'transplant':
      return transplantCell(store, job.cell);
    case 'train':
      // undefined = interrupted, with the checkpoint saved.
      return (await trainCell(store, job.cell, { signal, progress })) ?? null;
    case 'evaluate':
      return evaluateCell(store, job.cell);
    case 'measure':
      return measureCell(store, job.cell);
  }
});

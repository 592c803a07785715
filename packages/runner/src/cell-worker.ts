// The worker process of the embedded executor: runs the cells the parent sends, one at a time.
import type { Cell } from '@transferlab/experiment';
import { LocalFolderStore } from '@transferlab/platform';
import { runCell } from './run-cell.ts';
import { serveJobs } from './worker-pool.ts';

export interface CellJob {
  cell: Cell;
  storeRoot: string;
}

serveJobs(async (payload, { signal, progress }) => {
  const job = payload as CellJob;
  return runCell(new LocalFolderStore(job.storeRoot), job.cell, { signal, progress });
});

import type { Cell } from '@transferlab/experiment';
import { deriveSeed } from '@transferlab/nn';

/** The random streams of one cell. */
export interface CellStreams {
  /** Every freshly initialised weight. */
  init: number;
  /** The dropout masks, step by step. */
  dropout: number;
  /** The order of the training images and their augmentation, epoch by epoch. */
  order: number;
}

/**
 * Each cell draws its own streams from its repeat and its place in the grid (arm and n), so
 * baseA and baseB start from different weights, the fresh layers of a transfer cell are new
 * draws rather than its base net's initial ones, and no two cells share dropout masks. The
 * same cell in the same repeat always gets the same streams, which keeps runs and resumes
 * reproducible. Hyper-parameters are left out on purpose: a learning-rate change compares
 * nets that start from the same weights.
 */
export function cellStreams(cell: Pick<Cell, 'seed' | 'arm' | 'n'>): CellStreams {
  const identity = `${cell.arm}/n=${cell.n ?? 0}`;
  return {
    init: deriveSeed(cell.seed, `init/${identity}`),
    dropout: deriveSeed(cell.seed, `dropout/${identity}`),
    order: deriveSeed(cell.seed, `order/${identity}`),
  };
}

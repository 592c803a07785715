import { type LoadedSubset, batchesPerEpoch, makeBatches, openSplit } from '@transferlab/data';
import type { Cell } from '@transferlab/experiment';
import type { TrainData } from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { cellStreams } from './cell-seeds.ts';

/**
 * The batches with one turn of the event loop before each. A training step on wasm awaits only
 * promises that are already settled, so without it an epoch runs as one unbroken chain of
 * microtasks: the interrupt message from the parent and SIGINT wait for the epoch's end (its
 * checkpoint is the first real I/O). With it, the loop's per-batch signal check sees them at
 * the next batch (issue 9).
 */
async function* yieldingToEventLoop<T>(batches: AsyncIterable<T>): AsyncGenerator<T> {
  for await (const batch of batches) {
    await new Promise<void>((resolve) => setImmediate(resolve));
    yield batch;
  }
}

/** A cell's target half as training data: ordered and augmented as a function of (seed, epoch). */
export function trainData(cell: Cell, trainSet: LoadedSubset, valSet: LoadedSubset): TrainData {
  const { training } = cell;
  const orderSeed = cellStreams(cell).order;
  return {
    batches: (epoch, startBatch) =>
      yieldingToEventLoop(
        makeBatches(trainSet, {
          batchSize: training.batchSize,
          seed: orderSeed,
          epoch,
          startBatch,
          augment: training.augment === false ? undefined : training.augment,
          dropLast: false,
        }),
      ),
    batchesPerEpoch: batchesPerEpoch(trainSet.count, training.batchSize, false),
    val: { images: valSet.pixels, labels: valSet.labels, count: valSet.count },
  };
}

export async function loadSubsets(
  store: ObjectStore,
  cell: Cell,
  subsets: readonly ('train' | 'val' | 'test')[],
): Promise<LoadedSubset[]> {
  const split = await openSplit(store, cell.splitId);
  return Promise.all(subsets.map((subset) => split.loadSubset(cell.target, subset)));
}

/** Image shape and class count of a cell's target half, from the split's manifest alone. */
export async function cellGeometry(
  store: ObjectStore,
  cell: Cell,
): Promise<{ inputShape: [number, number, number]; classes: string[] }> {
  const { manifest } = await openSplit(store, cell.splitId);
  const [height, width, channels] = manifest.shape;
  return { inputShape: [height, width, channels], classes: manifest.halves[cell.target].classes };
}

import {
  type AugmentParams,
  type LoadedSubset,
  augmentImage,
  batchesPerEpoch,
  bytesPerImage,
  deriveRng,
  epochOrder,
  isIdentityAugment,
  makeBatches,
  openSplit,
} from '@transferlab/data';
import { type Cell, type PrefixCacheUse, type TrainingSpec, prefixCacheRule } from '@transferlab/experiment';
import {
  type Batch,
  type FeatureBatch,
  type PrefixCut,
  type TrainData,
  cacheablePrefix,
  prefixFeatures,
} from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import type * as tfl from '@tensorflow/tfjs-layers';
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

/**
 * The fixed views of `augment.views: fixed`, as Caffe cropped its test-time views: the four
 * corners and the centre of the zero-padded image (one view when crop is 0), each also mirrored
 * when mirror is on. At most 10.
 */
export function fixedViews(augment: TrainingSpec['augment']): AugmentParams[] {
  if (augment === false) return [{ crop: 0, offsetY: 0, offsetX: 0, mirror: false }];
  const crop = augment.crop;
  const far = 2 * crop;
  const offsets: Array<[number, number]> =
    crop > 0
      ? [
          [0, 0],
          [0, far],
          [far, 0],
          [far, far],
          [crop, crop],
        ]
      : [[0, 0]];
  const mirrors = augment.mirror ? [false, true] : [false];
  return mirrors.flatMap((mirror) => offsets.map(([offsetY, offsetX]) => ({ crop, offsetY, offsetX, mirror })));
}

/** Each image's view in an epoch: a function of (order seed, epoch) alone, so resuming draws the same. */
export function epochViews(count: number, seed: number, epoch: number, views: number): Uint8Array {
  const rng = deriveRng(seed, 'views', epoch);
  const chosen = new Uint8Array(count);
  for (let i = 0; i < count; i++) chosen[i] = views > 1 ? rng.int(views) : 0;
  return chosen;
}

/** Default bound on a worker's prefix cache (train and val features): 1 GiB. */
export const DEFAULT_PREFIX_CACHE_BYTES = 2 ** 30;
export const PREFIX_CACHE_BYTES_ENV = 'TRANSFERLAB_PREFIX_CACHE_BYTES';

/** The bound from TRANSFERLAB_PREFIX_CACHE_BYTES (0 turns caching off), else the default. */
export function prefixCacheBudget(env: NodeJS.ProcessEnv = process.env): number {
  const text = env[PREFIX_CACHE_BYTES_ENV]?.trim();
  if (!text) return DEFAULT_PREFIX_CACHE_BYTES;
  const bytes = Number(text);
  if (!Number.isSafeInteger(bytes) || bytes < 0)
    throw new Error(`${PREFIX_CACHE_BYTES_ENV} must be a whole number of bytes >= 0, got '${text}'`);
  return bytes;
}

/** How a cell will train: from images, or from its frozen prefix's outputs (and which). */
export type PrefixCachePlan =
  | { use: PrefixCacheUse & { mode: 'uncached' } }
  | { use: PrefixCacheUse & { mode: 'exact' | 'views' }; cut: PrefixCut; views: AugmentParams[] };

function fmtBytes(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Whether to cache: only a net with a frozen prefix (cacheablePrefix), trained without random
 * augmentation (none, or fixed views) for more epochs than it has views (prefixCacheRule), whose
 * features (every view of every training image, and the val images) fit under `budget` bytes.
 */
export function planPrefixCache(
  model: tfl.LayersModel,
  cell: Pick<Cell, 'training' | 'mode' | 'n'>,
  counts: { train: number; val: number },
  budget: number,
): PrefixCachePlan {
  const uncached = (reason: string): PrefixCachePlan => ({ use: { mode: 'uncached', reason } });
  const cut = cacheablePrefix(model);
  if (!cut) return uncached('no frozen layers to cache');
  // The spec's part of the rule is the forecast's too (experiment/cost.ts).
  const rule = prefixCacheRule(cell);
  if ('reason' in rule) return uncached(rule.reason);
  const { augment } = cell.training;
  const identity = augment === false || isIdentityAugment(augment);
  const views = identity ? fixedViews(false) : fixedViews(augment);
  const bytes = (counts.train * views.length + counts.val) * cut.featureSize * 4;
  if (bytes > budget)
    return uncached(`cache of ${fmtBytes(bytes)} over the ${fmtBytes(budget)} budget (${PREFIX_CACHE_BYTES_ENV})`);
  return { use: { mode: identity ? 'exact' : 'views', layer: cut.layer, bytes }, cut, views };
}

/** The cached features of every (image, view), row image * views + view. */
export interface TrainFeatures {
  cut: PrefixCut;
  views: AugmentParams[];
  features: Float32Array;
}

/**
 * Runs the frozen prefix once over every view of every training image, in padded passes of
 * the batch size: each row is computed in a batch of the size it trains in (prefix-cache.ts).
 */
export function trainFeatures(
  model: tfl.LayersModel,
  cell: Pick<Cell, 'training'>,
  trainSet: LoadedSubset,
  plan: Extract<PrefixCachePlan, { cut: PrefixCut }>,
): TrainFeatures {
  const { cut, views } = plan;
  const imageBytes = bytesPerImage(trainSet.shape);
  const rows = (start: number, count: number): Uint8Array => {
    const out = new Uint8Array(count * imageBytes);
    for (let k = 0; k < count; k++) {
      const row = start + k;
      const image = Math.floor(row / views.length);
      writeView(trainSet, image, views[row % views.length]!, out.subarray(k * imageBytes, (k + 1) * imageBytes));
    }
    return out;
  };
  const features = prefixFeatures(
    model,
    cut,
    { count: trainSet.count * views.length, images: rows },
    { chunkSize: cell.training.batchSize },
  );
  return { cut, views, features };
}

function writeView(set: LoadedSubset, image: number, view: AugmentParams, target: Uint8Array): void {
  const imageBytes = target.length;
  const pixels = set.pixels.subarray(image * imageBytes, (image + 1) * imageBytes);
  if (view.crop === 0 && !view.mirror) target.set(pixels);
  else augmentImage(pixels, target, set.shape, view);
}

/**
 * A cell's target half as training data, ordered (and augmented) as a function of (seed,
 * epoch). Random augmentation goes through the data package's batches. Fixed views, and no
 * augmentation with a prefix cache, take the same epoch order and gather each full batch from
 * `cache` when given; a short last batch holds other images every epoch and goes as images,
 * so no row ever trains from features computed in a batch of another size.
 */
export function trainData(cell: Cell, trainSet: LoadedSubset, valSet: LoadedSubset, cache?: TrainFeatures): TrainData {
  const { training } = cell;
  const orderSeed = cellStreams(cell).order;
  const batchSize = training.batchSize;
  const common = {
    batchesPerEpoch: batchesPerEpoch(trainSet.count, batchSize, false),
    val: { images: valSet.pixels, labels: valSet.labels, count: valSet.count },
  };
  const fixed = training.augment !== false && training.augment.views === 'fixed';
  if (!cache && !fixed) {
    return {
      ...common,
      batches: (epoch, startBatch) =>
        yieldingToEventLoop(
          makeBatches(trainSet, {
            batchSize,
            seed: orderSeed,
            epoch,
            startBatch,
            augment: training.augment === false ? undefined : training.augment,
            dropLast: false,
          }),
        ),
    };
  }
  const views = cache?.views ?? fixedViews(training.augment);
  const imageBytes = bytesPerImage(trainSet.shape);
  async function* batches(epoch: number, startBatch: number): AsyncGenerator<Batch | FeatureBatch> {
    const order = epochOrder(trainSet.count, orderSeed, epoch);
    const chosen = epochViews(trainSet.count, orderSeed, epoch, views.length);
    for (let b = startBatch; b < common.batchesPerEpoch; b++) {
      const first = b * batchSize;
      const count = Math.min(batchSize, trainSet.count - first);
      const labels = new Int32Array(count);
      for (let k = 0; k < count; k++) labels[k] = trainSet.labels[order[first + k]!]!;
      if (cache && count === batchSize) {
        const size = cache.cut.featureSize;
        const features = new Float32Array(count * size);
        for (let k = 0; k < count; k++) {
          const image = order[first + k]!;
          const row = image * views.length + chosen[image]!;
          features.set(cache.features.subarray(row * size, (row + 1) * size), k * size);
        }
        yield { features, labels, count };
        continue;
      }
      const images = new Uint8Array(count * imageBytes);
      for (let k = 0; k < count; k++) {
        const image = order[first + k]!;
        writeView(trainSet, image, views[chosen[image]!]!, images.subarray(k * imageBytes, (k + 1) * imageBytes));
      }
      yield { images, labels, count };
    }
  }
  return {
    ...common,
    ...(cache ? { prefix: { cut: cache.cut } } : {}),
    batches: (epoch, startBatch) => yieldingToEventLoop(batches(epoch, startBatch)),
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

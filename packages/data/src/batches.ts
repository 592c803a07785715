/**
 * Mini-batches for training. An epoch's order, and each batch's augmentation, are functions
 * of (seed, epoch) and (seed, epoch, batch index) alone, so a trainer resumed at batch k of
 * an epoch sees exactly the batches it would have seen had it never stopped.
 */
import {
  type AugmentOptions,
  augmentImage,
  checkAugmentOptions,
  drawAugmentParams,
  isIdentityAugment,
} from './augment.ts';
import { bytesPerImage, type ImageShape, type Subset } from './dataset.ts';
import { deriveRng, permutation } from './prng.ts';

export interface StreamItem {
  /** One image, HWC. */
  pixels: Uint8Array;
  label: number;
}

/** A subset read lazily (e.g. from shards): `open` must yield the same sequence for the same (seed, epoch). */
export interface StreamSource {
  shape: ImageShape;
  count: number;
  open(seed: number, epoch: number): AsyncIterable<StreamItem>;
}

export type InMemorySource = Subset & { shape: ImageShape };

export interface Batch {
  /** count images, HWC, back to back. */
  images: Uint8Array;
  labels: Int32Array;
  count: number;
}

export interface BatchOptions {
  batchSize: number;
  seed: number;
  epoch: number;
  /** Skip the epoch's first startBatch batches (to resume). */
  startBatch?: number;
  augment?: AugmentOptions;
  /** Drop the last batch when it is smaller than batchSize. */
  dropLast?: boolean;
}

export function batchesPerEpoch(count: number, batchSize: number, dropLast: boolean): number {
  if (!Number.isSafeInteger(count) || count < 0) throw new RangeError(`count must be an integer >= 0, got ${count}`);
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new RangeError(`batchSize must be an integer >= 1, got ${batchSize}`);
  return dropLast ? Math.floor(count / batchSize) : Math.ceil(count / batchSize);
}

/** The in-memory order of an epoch: a permutation of 0..count-1. */
export function epochOrder(count: number, seed: number, epoch: number): Uint32Array {
  return permutation(count, deriveRng(seed, 'epoch-order', epoch));
}

function isStreamSource(source: InMemorySource | StreamSource): source is StreamSource {
  return typeof (source as Partial<StreamSource>).open === 'function';
}

/** Fills batch slots from source images, augmenting when asked. */
class BatchBuilder {
  readonly imageBytes: number;
  private readonly augment: AugmentOptions | undefined;

  constructor(
    readonly shape: ImageShape,
    private readonly options: BatchOptions,
  ) {
    this.imageBytes = bytesPerImage(shape);
    this.augment = isIdentityAugment(options.augment) ? undefined : options.augment;
  }

  /** `images(slot)` gives the slot's source image; called once per slot, in slot order. */
  build(batchIndex: number, count: number, image: (slot: number) => { pixels: Uint8Array; label: number }): Batch {
    const images = new Uint8Array(count * this.imageBytes);
    const labels = new Int32Array(count);
    const rng =
      this.augment === undefined ? undefined : deriveRng(this.options.seed, 'augment', this.options.epoch, batchIndex);
    for (let slot = 0; slot < count; slot++) {
      const { pixels, label } = image(slot);
      if (pixels.length !== this.imageBytes)
        throw new RangeError(
          `batch ${batchIndex} slot ${slot}: image has ${pixels.length} bytes, expected ${this.imageBytes}`,
        );
      labels[slot] = label;
      const target = slot * this.imageBytes;
      if (rng === undefined) images.set(pixels, target);
      else
        augmentImage(
          pixels,
          images.subarray(target, target + this.imageBytes),
          this.shape,
          drawAugmentParams(rng, this.augment!),
        );
    }
    return { images, labels, count };
  }
}

export function makeBatches(source: InMemorySource | StreamSource, options: BatchOptions): AsyncIterable<Batch> {
  const count = source.count;
  const total = batchesPerEpoch(count, options.batchSize, options.dropLast ?? false);
  const startBatch = options.startBatch ?? 0;
  if (!Number.isSafeInteger(startBatch) || startBatch < 0 || startBatch > total) {
    throw new RangeError(`startBatch must be an integer in 0..${total} (batches in this epoch), got ${startBatch}`);
  }
  if (!Number.isSafeInteger(options.seed)) throw new RangeError(`seed must be an integer, got ${options.seed}`);
  if (!Number.isSafeInteger(options.epoch) || options.epoch < 0)
    throw new RangeError(`epoch must be an integer >= 0, got ${options.epoch}`);
  if (options.augment !== undefined) checkAugmentOptions(options.augment);
  const builder = new BatchBuilder(source.shape, options);
  return isStreamSource(source)
    ? streamBatches(source, builder, { ...options, total, startBatch })
    : memoryBatches(source, builder, { ...options, total, startBatch });
}

type Resolved = BatchOptions & { total: number; startBatch: number };

async function* memoryBatches(source: InMemorySource, builder: BatchBuilder, options: Resolved): AsyncGenerator<Batch> {
  const bytes = builder.imageBytes;
  if (source.pixels.length !== source.count * bytes || source.labels.length !== source.count) {
    throw new RangeError(
      `source has ${source.pixels.length} pixel bytes and ${source.labels.length} labels, expected ${source.count * bytes} and ${source.count}`,
    );
  }
  const order = epochOrder(source.count, options.seed, options.epoch);
  for (let b = options.startBatch; b < options.total; b++) {
    const first = b * options.batchSize;
    const size = Math.min(options.batchSize, source.count - first);
    yield builder.build(b, size, (slot) => {
      const index = order[first + slot]!;
      return { pixels: source.pixels.subarray(index * bytes, (index + 1) * bytes), label: source.labels[index]! };
    });
  }
}

async function* streamBatches(source: StreamSource, builder: BatchBuilder, options: Resolved): AsyncGenerator<Batch> {
  // The stream cannot seek: resuming reads and discards the items of the skipped batches,
  // which keeps the order identical to an uninterrupted epoch.
  let skip = options.startBatch * options.batchSize;
  let batchIndex = options.startBatch;
  let pending: StreamItem[] = [];
  for await (const item of source.open(options.seed, options.epoch)) {
    if (skip > 0) {
      skip--;
      continue;
    }
    if (batchIndex >= options.total) break;
    pending.push(item);
    if (pending.length === options.batchSize) {
      const items = pending;
      pending = [];
      yield builder.build(batchIndex++, items.length, (slot) => items[slot]!);
    }
  }
  if (pending.length > 0 && batchIndex < options.total) {
    const items = pending;
    yield builder.build(batchIndex, items.length, (slot) => items[slot]!);
  }
}

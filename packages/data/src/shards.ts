/**
 * The stored form of a split: uint8 image shards plus a JSON manifest, in an object store.
 *
 *   splits/<splitId>/manifest.json                      written last: present = complete
 *   splits/<splitId>/<A|B>/<train|val|test>/shard-00000.bin
 *
 * Shard layout (version 1), all integers little-endian:
 *
 *   offset          size            field
 *   0               4               magic, ASCII "TLSH"
 *   4               4               u32 layout version (1)
 *   8               4               u32 count: images in this shard
 *   12              4               u32 height
 *   16              4               u32 width
 *   20              4               u32 channels
 *   24              8               reserved, zero
 *   32              2 * count       u16 labels, half-local (0..classes-1 of the half)
 *   32 + 2 * count  count * h*w*c   uint8 pixels, image after image, each HWC row-major
 *
 * Labels come first so that the pixel block needs no alignment and can be used in place.
 * Every shard but the last of a subset holds exactly shardSize images; the manifest records
 * each shard's count and sha256, which readers check before using a byte of it.
 */
import { createHash } from 'node:crypto';
import { ObjectNotFoundError, type ObjectStore } from '@transferlab/platform';
import { z } from 'zod';
import type { StreamItem, StreamSource } from './batches.ts';
import { bytesPerImage, type Dataset, type ImageShape, type Subset } from './dataset.ts';
import { DataError } from './errors.ts';
import { deriveRng, permutation, shuffleInPlace } from './prng.ts';
import {
  HALVES,
  type HalfName,
  SUBSETS,
  type SplitPlan,
  type SplitSpec,
  type SubsetName,
  selectImages,
} from './split.ts';

export const SHARD_MAGIC = 'TLSH';
export const SHARD_LAYOUT_VERSION = 1;
export const SHARD_HEADER_BYTES = 32;
export const MANIFEST_VERSION = 1;
export const DEFAULT_SHARD_SIZE = 4096;
const MAX_LABEL = 0xffff;

export interface ShardEntry {
  key: string;
  count: number;
  sha256: string;
}

export interface SubsetManifest {
  count: number;
  /** Images per half-local label. */
  perClass: number[];
  shards: ShardEntry[];
}

export interface HalfManifest {
  /** Half-local label i is classes[i]. */
  classes: string[];
  /** The dataset label of each class. */
  sourceLabels: number[];
  subsets: Record<SubsetName, SubsetManifest>;
}

export interface SplitManifest {
  version: typeof MANIFEST_VERSION;
  splitId: string;
  dataset: { name: string; source: string };
  shape: ImageShape;
  shardSize: number;
  spec: SplitSpec;
  halves: Record<HalfName, HalfManifest>;
}

const countSchema = z.number().int().nonnegative();
const subsetSchema = z.object({
  count: countSchema,
  perClass: z.array(countSchema),
  shards: z.array(z.object({ key: z.string(), count: countSchema, sha256: z.string().regex(/^[0-9a-f]{64}$/) })),
});
const halfSchema = z.object({
  classes: z.array(z.string()),
  sourceLabels: z.array(countSchema),
  subsets: z.object({ train: subsetSchema, val: subsetSchema, test: subsetSchema }),
});
const manifestSchema = z.object({
  version: z.literal(MANIFEST_VERSION),
  splitId: z.string(),
  dataset: z.object({ name: z.string(), source: z.string() }),
  shape: z.tuple([z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
  shardSize: z.number().int().positive(),
  spec: z.looseObject({ kind: z.enum(['random', 'groups']) }),
  halves: z.object({ A: halfSchema, B: halfSchema }),
});

export function manifestKey(splitId: string): string {
  return `splits/${splitId}/manifest.json`;
}

export function shardKey(splitId: string, place: { half: HalfName; subset: SubsetName; index: number }): string {
  const { half, subset, index } = place;
  return `splits/${splitId}/${half}/${subset}/shard-${String(index).padStart(5, '0')}.bin`;
}

function checkSplitId(splitId: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(splitId)) {
    throw new RangeError(
      `splitId '${splitId}' must be letters, digits, '.', '_' or '-' (it becomes part of object keys)`,
    );
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Encodes one shard; `pixels` holds labels.length images of `shape`. */
export function encodeShard(pixels: Uint8Array, labels: Int32Array, shape: ImageShape): Uint8Array {
  const count = labels.length;
  if (pixels.length !== count * bytesPerImage(shape))
    throw new RangeError(
      `encodeShard: ${pixels.length} pixel bytes for ${count} images of shape [${shape.join(', ')}]`,
    );
  const bytes = new Uint8Array(SHARD_HEADER_BYTES + 2 * count + pixels.length);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 4; i++) bytes[i] = SHARD_MAGIC.charCodeAt(i);
  view.setUint32(4, SHARD_LAYOUT_VERSION, true);
  view.setUint32(8, count, true);
  view.setUint32(12, shape[0], true);
  view.setUint32(16, shape[1], true);
  view.setUint32(20, shape[2], true);
  for (let i = 0; i < count; i++) {
    const label = labels[i]!;
    if (label < 0 || label > MAX_LABEL) throw new RangeError(`encodeShard: label ${label} does not fit in u16`);
    view.setUint16(SHARD_HEADER_BYTES + 2 * i, label, true);
  }
  bytes.set(pixels, SHARD_HEADER_BYTES + 2 * count);
  return bytes;
}

export interface DecodedShard {
  count: number;
  shape: ImageShape;
  labels: Int32Array;
  /** A view into the shard's bytes. */
  pixels: Uint8Array;
}

/** `where` names the shard in errors (its key or location). */
export function decodeShard(bytes: Uint8Array, where: string): DecodedShard {
  const fail = (problem: string, offset?: number): never => {
    throw new DataError(where, problem, offset === undefined ? {} : { offset });
  };
  if (bytes.length < SHARD_HEADER_BYTES)
    fail(`shard is ${bytes.length} bytes, shorter than its ${SHARD_HEADER_BYTES}-byte header`);
  const magic = String.fromCharCode(bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!);
  if (magic !== SHARD_MAGIC)
    fail(`not a shard: magic ${JSON.stringify(magic)}, expected ${JSON.stringify(SHARD_MAGIC)}`, 0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(4, true);
  if (version !== SHARD_LAYOUT_VERSION)
    fail(`shard layout version ${version}, this reader knows ${SHARD_LAYOUT_VERSION}`, 4);
  const count = view.getUint32(8, true);
  const shape: ImageShape = [view.getUint32(12, true), view.getUint32(16, true), view.getUint32(20, true)];
  const labelBytes = 2 * count;
  const expected = SHARD_HEADER_BYTES + labelBytes + count * bytesPerImage(shape);
  if (bytes.length !== expected)
    fail(
      `shard is ${bytes.length} bytes; its header (count ${count}, shape [${shape.join(', ')}]) implies ${expected}`,
      8,
    );
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) labels[i] = view.getUint16(SHARD_HEADER_BYTES + 2 * i, true);
  return { count, shape, labels, pixels: bytes.subarray(SHARD_HEADER_BYTES + labelBytes) };
}

export interface WriteProgress {
  half: HalfName;
  subset: SubsetName;
  /** Shards of this subset done so far, and in all. */
  shard: number;
  shards: number;
  /** Images of the whole split done so far, and in all. */
  images: number;
  totalImages: number;
}

export interface WriteSplitOptions {
  splitId: string;
  plan: SplitPlan;
  /** Images per shard; default 4096. */
  shardSize?: number;
  onProgress?: (progress: WriteProgress) => void;
}

async function readManifest(store: ObjectStore, splitId: string): Promise<SplitManifest> {
  const key = manifestKey(splitId);
  let bytes: Buffer;
  try {
    bytes = await store.get(key);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) {
      throw new DataError(
        store.describe(key),
        `split '${splitId}' not found: no manifest (absent, or its writing never finished)`,
      );
    }
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new DataError(store.describe(key), `manifest is not valid JSON: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const parsed = manifestSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DataError(
      store.describe(key),
      `invalid manifest at ${['manifest', ...issue.path.map(String)].join('.')}: ${issue.message}`,
    );
  }
  const manifest = parsed.data as unknown as SplitManifest;
  if (manifest.splitId !== splitId)
    throw new DataError(store.describe(key), `manifest is for split '${manifest.splitId}', expected '${splitId}'`);
  return manifest;
}

/**
 * Writes the split's shards, then its manifest. Returns the existing manifest untouched when
 * the split is already complete. After a crash, a rerun skips shards already stored with the
 * right content (same size and sha256 in the object's metadata) and writes the rest.
 */
export async function writeSplit(
  store: ObjectStore,
  dataset: Dataset,
  options: WriteSplitOptions,
): Promise<SplitManifest> {
  const { splitId, plan } = options;
  checkSplitId(splitId);
  const shardSize = options.shardSize ?? DEFAULT_SHARD_SIZE;
  if (!Number.isSafeInteger(shardSize) || shardSize < 1)
    throw new RangeError(`shardSize must be an integer >= 1, got ${shardSize}`);
  if ((await store.stat(manifestKey(splitId))) !== undefined) {
    const existing = await readManifest(store, splitId);
    // Ids are meant to be content-addressed; a clash means a caller reused an id by hand.
    const same =
      existing.shape.every((size, i) => size === dataset.shape[i]) &&
      HALVES.every((half) => existing.halves[half].classes.join('\n') === plan.halves[half].classes.join('\n'));
    if (!same) {
      throw new DataError(
        store.describe(manifestKey(splitId)),
        `split '${splitId}' already exists with other classes or shape`,
      );
    }
    return existing;
  }

  const selection = selectImages(dataset, plan);
  const imageBytes = bytesPerImage(dataset.shape);
  const totalImages = HALVES.reduce(
    (sum, half) => sum + SUBSETS.reduce((inner, subset) => inner + selection[half][subset].indices.length, 0),
    0,
  );
  let imagesDone = 0;
  const halves: Partial<Record<HalfName, HalfManifest>> = {};
  for (const half of HALVES) {
    const { classes, sourceLabels } = plan.halves[half];
    if (classes.length - 1 > MAX_LABEL)
      throw new RangeError(`half ${half} has ${classes.length} classes; shards store labels as u16`);
    const subsets: Partial<Record<SubsetName, SubsetManifest>> = {};
    for (const subset of SUBSETS) {
      const chosen = selection[half][subset];
      const from: Subset | undefined = chosen.source === 'train' ? dataset.train : dataset.test;
      if (from === undefined)
        throw new Error(
          `internal: ${half}/${subset} selects from the dataset's ${chosen.source} subset, which is absent`,
        );
      const shardCount = Math.ceil(chosen.indices.length / shardSize);
      const shards: ShardEntry[] = [];
      for (let s = 0; s < shardCount; s++) {
        const first = s * shardSize;
        const count = Math.min(shardSize, chosen.indices.length - first);
        const pixels = new Uint8Array(count * imageBytes);
        for (let i = 0; i < count; i++) {
          const index = chosen.indices[first + i]!;
          pixels.set(from.pixels.subarray(index * imageBytes, (index + 1) * imageBytes), i * imageBytes);
        }
        const bytes = encodeShard(pixels, chosen.labels.subarray(first, first + count), dataset.shape);
        const hash = sha256(bytes);
        const key = shardKey(splitId, { half, subset, index: s });
        const existing = await store.stat(key);
        if (existing === undefined || existing.size !== bytes.length || existing.metadata['sha256'] !== hash) {
          await store.put(key, bytes, { metadata: { sha256: hash } });
        }
        shards.push({ key, count, sha256: hash });
        imagesDone += count;
        options.onProgress?.({ half, subset, shard: s + 1, shards: shardCount, images: imagesDone, totalImages });
      }
      subsets[subset] = { count: chosen.indices.length, perClass: chosen.perClass, shards };
    }
    halves[half] = {
      classes: classes.slice(),
      sourceLabels: sourceLabels.slice(),
      subsets: subsets as Record<SubsetName, SubsetManifest>,
    };
  }
  const manifest: SplitManifest = {
    version: MANIFEST_VERSION,
    splitId,
    dataset: { name: dataset.name, source: dataset.source },
    shape: [...dataset.shape],
    shardSize,
    spec: plan.spec,
    halves: halves as Record<HalfName, HalfManifest>,
  };
  await store.put(manifestKey(splitId), new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`), {
    metadata: { 'content-type': 'application/json' },
  });
  return manifest;
}

export type LoadedSubset = Subset & { shape: ImageShape; classes: string[] };

export interface StreamOptions {
  seed: number;
  epoch: number;
  /** Images held for shuffling; default the manifest's shardSize. 1 reads shards in (seeded) order as stored. */
  shuffleBuffer?: number;
}

export interface SplitReader {
  readonly manifest: SplitManifest;
  /** Reads and verifies one shard. */
  readShard(half: HalfName, subset: SubsetName, index: number): Promise<DecodedShard>;
  /** The whole subset in memory, in stored order. */
  loadSubset(half: HalfName, subset: SubsetName): Promise<LoadedSubset>;
  /**
   * Images one at a time, in an order fixed by (seed, epoch): shards in a seeded order, through
   * a seeded shuffle buffer. Holds at most the buffer, the current shard and the next one.
   */
  stream(half: HalfName, subset: SubsetName, options: StreamOptions): AsyncIterable<StreamItem>;
  /** The subset as a StreamSource for makeBatches. */
  source(half: HalfName, subset: SubsetName, options?: { shuffleBuffer?: number }): StreamSource;
}

export async function openSplit(store: ObjectStore, splitId: string): Promise<SplitReader> {
  checkSplitId(splitId);
  return new StoredSplit(store, await readManifest(store, splitId));
}

class StoredSplit implements SplitReader {
  constructor(
    private readonly store: ObjectStore,
    readonly manifest: SplitManifest,
  ) {}

  private subsetManifest(half: HalfName, subset: SubsetName): SubsetManifest {
    if (!HALVES.includes(half)) throw new RangeError(`half must be A or B, got ${JSON.stringify(half)}`);
    if (!SUBSETS.includes(subset))
      throw new RangeError(`subset must be train, val or test, got ${JSON.stringify(subset)}`);
    return this.manifest.halves[half].subsets[subset];
  }

  async readShard(half: HalfName, subset: SubsetName, index: number): Promise<DecodedShard> {
    const entry = this.subsetManifest(half, subset).shards[index];
    if (entry === undefined)
      throw new RangeError(`split '${this.manifest.splitId}' ${half}/${subset} has no shard ${index}`);
    const where = this.store.describe(entry.key);
    let bytes: Buffer;
    try {
      bytes = await this.store.get(entry.key);
    } catch (error) {
      if (error instanceof ObjectNotFoundError)
        throw new DataError(where, `shard ${entry.key} is missing, though the manifest lists it`, { cause: error });
      throw error;
    }
    const actual = sha256(bytes);
    if (actual !== entry.sha256) {
      throw new DataError(where, `shard ${entry.key} is corrupt: sha256 ${actual}, manifest says ${entry.sha256}`);
    }
    const shard = decodeShard(bytes, where);
    const shape = this.manifest.shape;
    if (shard.count !== entry.count || shard.shape.some((size, i) => size !== shape[i])) {
      throw new DataError(
        where,
        `shard holds ${shard.count} images of [${shard.shape.join(', ')}], manifest says ${entry.count} of [${shape.join(', ')}]`,
      );
    }
    return shard;
  }

  /** readShard, started early; if the caller stops first nobody awaits it, so keep a failure from going unhandled. */
  private readAhead(half: HalfName, subset: SubsetName, index: number): Promise<DecodedShard> {
    const pending = this.readShard(half, subset, index);
    pending.catch(() => undefined);
    return pending;
  }

  async loadSubset(half: HalfName, subset: SubsetName): Promise<LoadedSubset> {
    const entry = this.subsetManifest(half, subset);
    const imageBytes = bytesPerImage(this.manifest.shape);
    const pixels = new Uint8Array(entry.count * imageBytes);
    const labels = new Int32Array(entry.count);
    let at = 0;
    const fetch = (index: number): Promise<DecodedShard> | undefined =>
      index < entry.shards.length ? this.readAhead(half, subset, index) : undefined;
    let next = fetch(0);
    for (let s = 0; next !== undefined; s++) {
      const shard = await next;
      next = fetch(s + 1);
      if (at + shard.count > entry.count) break;
      pixels.set(shard.pixels, at * imageBytes);
      labels.set(shard.labels, at);
      at += shard.count;
    }
    if (at !== entry.count) {
      throw new DataError(
        this.store.describe(manifestKey(this.manifest.splitId)),
        `${half}/${subset}: shards hold ${at} images, manifest count is ${entry.count}`,
      );
    }
    return {
      count: entry.count,
      pixels,
      labels,
      shape: [...this.manifest.shape],
      classes: this.manifest.halves[half].classes.slice(),
    };
  }

  async *stream(half: HalfName, subset: SubsetName, options: StreamOptions): AsyncGenerator<StreamItem> {
    const entry = this.subsetManifest(half, subset);
    const bufferSize = options.shuffleBuffer ?? this.manifest.shardSize;
    if (!Number.isSafeInteger(bufferSize) || bufferSize < 1)
      throw new RangeError(`shuffleBuffer must be an integer >= 1, got ${bufferSize}`);
    const imageBytes = bytesPerImage(this.manifest.shape);
    const order = permutation(
      entry.shards.length,
      deriveRng(options.seed, 'stream-shards', half, subset, options.epoch),
    );
    const rng = deriveRng(options.seed, 'stream-buffer', half, subset, options.epoch);
    const fetch = (position: number): Promise<DecodedShard> | undefined =>
      position < order.length ? this.readAhead(half, subset, order[position]!) : undefined;
    const buffer: StreamItem[] = [];
    let next = fetch(0);
    for (let position = 0; next !== undefined; position++) {
      const shard = await next;
      next = fetch(position + 1);
      for (let i = 0; i < shard.count; i++) {
        // A copy, so that a buffered image does not keep its whole shard alive.
        const item = { pixels: shard.pixels.slice(i * imageBytes, (i + 1) * imageBytes), label: shard.labels[i]! };
        if (buffer.length < bufferSize) {
          buffer.push(item);
          continue;
        }
        const j = rng.int(bufferSize);
        const out = buffer[j]!;
        buffer[j] = item;
        yield out;
      }
    }
    shuffleInPlace(buffer, rng);
    yield* buffer;
  }

  source(half: HalfName, subset: SubsetName, options: { shuffleBuffer?: number } = {}): StreamSource {
    const count = this.subsetManifest(half, subset).count;
    return {
      shape: [...this.manifest.shape],
      count,
      open: (seed, epoch) =>
        this.stream(half, subset, {
          seed,
          epoch,
          ...(options.shuffleBuffer === undefined ? {} : { shuffleBuffer: options.shuffleBuffer }),
        }),
    };
  }
}

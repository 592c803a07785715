import { createHash } from 'node:crypto';
import { type ObjectStore } from '@transferlab/platform';
import type { Dataset, ImageShape, Subset } from './dataset.ts';
import { bytesPerImage } from './dataset.ts';
import { DataError } from './errors.ts';
import { decodeShard, encodeShard } from './shards.ts';

/**
 * A whole dataset, decoded once, in the shard format: `datasets/<key>/manifest.json` plus
 * `train|test/shard-NNNNN.bin`. Decoding 60,000 JPEGs costs ~20 s and an ImageNet folder hours;
 * every later split of the same source reads these shards instead. The manifest is written
 * last, so a present manifest means a complete cache, and every shard's sha256 is checked.
 */
export interface DatasetCacheManifest {
  format: 'transferlab-dataset';
  version: 1;
  name: string;
  source: string;
  classes: string[];
  shape: ImageShape;
  subsets: Partial<
    Record<'train' | 'test', { count: number; shards: Array<{ key: string; count: number; sha256: string }> }>
  >;
}

const SHARD_IMAGES = 8192;

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** The cache's folder for a reader source: a hash of the source as the reader sees it. */
export function datasetCacheKey(source: unknown): string {
  return `datasets/${sha256(new TextEncoder().encode(JSON.stringify(source))).slice(0, 20)}`;
}

export async function writeDatasetCache(
  store: ObjectStore,
  key: string,
  dataset: Dataset,
): Promise<DatasetCacheManifest> {
  const manifest: DatasetCacheManifest = {
    format: 'transferlab-dataset',
    version: 1,
    name: dataset.name,
    source: dataset.source,
    classes: dataset.classes,
    shape: dataset.shape,
    subsets: {},
  };
  const size = bytesPerImage(dataset.shape);
  for (const [name, subset] of [
    ['train', dataset.train],
    ['test', dataset.test],
  ] as const) {
    if (!subset) continue;
    const shards: Array<{ key: string; count: number; sha256: string }> = [];
    for (let start = 0, index = 0; start < subset.count; start += SHARD_IMAGES, index++) {
      const end = Math.min(subset.count, start + SHARD_IMAGES);
      const bytes = encodeShard(
        subset.pixels.subarray(start * size, end * size),
        subset.labels.subarray(start, end),
        dataset.shape,
      );
      const shardKey = `${key}/${name}/shard-${String(index).padStart(5, '0')}.bin`;
      await store.put(shardKey, bytes);
      shards.push({ key: shardKey, count: end - start, sha256: sha256(bytes) });
    }
    manifest.subsets[name] = { count: subset.count, shards };
  }
  await store.put(`${key}/manifest.json`, new TextEncoder().encode(JSON.stringify(manifest, null, 2)));
  return manifest;
}

/** The cached dataset, or undefined when there is no complete cache under `key`. */
export async function readDatasetCache(store: ObjectStore, key: string): Promise<Dataset | undefined> {
  const manifestKey = `${key}/manifest.json`;
  if (!(await store.stat(manifestKey))) return undefined;
  const manifest = JSON.parse((await store.get(manifestKey)).toString('utf8')) as DatasetCacheManifest;
  if (manifest.format !== 'transferlab-dataset' || manifest.version !== 1) {
    throw new DataError(
      store.describe(manifestKey),
      `not a dataset cache manifest (format ${manifest.format}, version ${manifest.version})`,
    );
  }
  const size = bytesPerImage(manifest.shape);
  const load = async (name: 'train' | 'test'): Promise<Subset | undefined> => {
    const entry = manifest.subsets[name];
    if (!entry) return undefined;
    const pixels = new Uint8Array(entry.count * size);
    const labels = new Int32Array(entry.count);
    let offset = 0;
    for (const shard of entry.shards) {
      const bytes = new Uint8Array(await store.get(shard.key));
      const actual = sha256(bytes);
      if (actual !== shard.sha256) {
        throw new DataError(
          store.describe(shard.key),
          `shard is corrupt: sha256 ${actual}, manifest says ${shard.sha256}`,
        );
      }
      const decoded = decodeShard(bytes, store.describe(shard.key));
      pixels.set(decoded.pixels, offset * size);
      labels.set(decoded.labels, offset);
      offset += decoded.count;
    }
    if (offset !== entry.count) {
      throw new DataError(
        store.describe(manifestKey),
        `${name} holds ${offset} images in its shards, the manifest says ${entry.count}`,
      );
    }
    return { count: entry.count, pixels, labels };
  };
  const train = await load('train');
  if (!train) throw new DataError(store.describe(manifestKey), 'the cache has no train subset');
  return {
    name: manifest.name,
    classes: manifest.classes,
    shape: manifest.shape,
    train,
    test: await load('test'),
    source: manifest.source,
  };
}

import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalFolderStore } from '@transferlab/platform';
import type { Dataset } from './dataset.ts';
import { datasetCacheKey, readDatasetCache, writeDatasetCache } from './dataset-cache.ts';

function dataset(count: number): Dataset {
  const shape: [number, number, number] = [4, 4, 3];
  const pixels = new Uint8Array(count * 48).map((_, i) => (i * 7) % 251);
  const labels = new Int32Array(count).map((_, i) => i % 3);
  return {
    name: 'tiny',
    classes: ['a', 'b', 'c'],
    shape,
    train: { count, pixels, labels },
    test: { count: 5, pixels: pixels.slice(0, 5 * 48), labels: labels.slice(0, 5) },
    source: '/data/tiny',
  };
}

describe('dataset cache', () => {
  it('round-trips a dataset across several shards, bit for bit', async () => {
    const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-dscache-')));
    const original = dataset(20_000);
    const key = datasetCacheKey({ kind: 'image-folder', path: '/data/tiny' });
    const manifest = await writeDatasetCache(store, key, original);
    expect(manifest.subsets.train!.shards).toHaveLength(3);
    const read = await readDatasetCache(store, key);
    expect(read?.classes).toEqual(original.classes);
    expect(read?.shape).toEqual(original.shape);
    expect(Buffer.from(read!.train.pixels).equals(Buffer.from(original.train.pixels))).toBe(true);
    expect([...read!.train.labels]).toEqual([...original.train.labels]);
    expect(read?.test?.count).toBe(5);
  });

  it('has no cache before the manifest is written, and refuses a corrupt shard by key', async () => {
    const store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-dscache-')));
    const key = datasetCacheKey({ kind: 'cifar10', path: '/x' });
    expect(await readDatasetCache(store, key)).toBeUndefined();
    const manifest = await writeDatasetCache(store, key, dataset(10));
    const shard = manifest.subsets.train!.shards[0]!.key;
    const bytes = await store.get(shard);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    await store.put(shard, bytes);
    await expect(readDatasetCache(store, key)).rejects.toThrow(new RegExp(`${shard}.*corrupt: sha256`));
  });

  it('keys differ by source', () => {
    expect(datasetCacheKey({ kind: 'cifar10', path: '/a' })).not.toBe(datasetCacheKey({ kind: 'cifar10', path: '/b' }));
  });
});

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalFolderStore, type ObjectStore } from '@transferlab/platform';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Batch, makeBatches } from './batches.ts';
import type { Dataset, ImageShape, Subset } from './dataset.ts';
import { DataError } from './errors.ts';
import {
  type SplitManifest,
  decodeShard,
  encodeShard,
  manifestKey,
  openSplit,
  shardKey,
  writeSplit,
} from './shards.ts';
import { type SplitPlan, planSplit, selectImages } from './split.ts';

const SHAPE: ImageShape = [3, 3, 2];
const BYTES = 18;
const CLASSES = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'];

/** Image i of a subset starts with a tag byte (1 train, 2 test) and i in two bytes. */
function subset(perClass: number, tag: number): Subset {
  const count = perClass * CLASSES.length;
  const pixels = new Uint8Array(count * BYTES);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    labels[i] = i % CLASSES.length;
    for (let b = 0; b < BYTES; b++) pixels[i * BYTES + b] = (i * 13 + b) & 255;
    pixels[i * BYTES] = tag;
    pixels[i * BYTES + 1] = i & 255;
    pixels[i * BYTES + 2] = i >> 8;
  }
  return { count, pixels, labels };
}

const toy = (): Dataset => ({
  name: 'toy',
  classes: CLASSES,
  shape: SHAPE,
  train: subset(20, 1),
  test: subset(4, 2),
  source: 'memory:toy',
});
const plan = (): SplitPlan =>
  planSplit(CLASSES, { kind: 'random', seed: 3, caps: { valPerClass: 3, trainPerClass: 12 } });
const idOf = (pixels: Uint8Array, slot = 0): string =>
  `${pixels[slot * BYTES]}:${pixels[slot * BYTES + 1]! | (pixels[slot * BYTES + 2]! << 8)}`;

/** Counts puts, and throws on the failAt-th one (1-based) to simulate a crash mid-write. */
class FlakyStore implements ObjectStore {
  puts: string[] = [];
  constructor(
    readonly inner: ObjectStore,
    readonly failAt = Number.POSITIVE_INFINITY,
  ) {}
  async put(key: string, data: Uint8Array, options?: { metadata?: Record<string, string> }): Promise<void> {
    if (this.puts.length + 1 >= this.failAt) throw new Error(`simulated crash on put ${this.failAt} (${key})`);
    this.puts.push(key);
    await this.inner.put(key, data, options);
  }
  get(key: string): Promise<Buffer> {
    return this.inner.get(key);
  }
  stat(key: string): ReturnType<ObjectStore['stat']> {
    return this.inner.stat(key);
  }
  list(prefix: string): Promise<string[]> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  describe(key: string): string {
    return this.inner.describe(key);
  }
}

let root: string;
let store: LocalFolderStore;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'transferlab-shards-'));
  store = new LocalFolderStore(root);
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

describe('shard codec', () => {
  it('round-trips and rejects foreign bytes', () => {
    const pixels = Uint8Array.from({ length: 2 * BYTES }, (_, i) => i);
    const bytes = encodeShard(pixels, Int32Array.from([5, 65535]), SHAPE);
    expect(bytes.length).toBe(32 + 4 + 2 * BYTES);
    const shard = decodeShard(bytes, 'x.bin');
    expect(shard.shape).toEqual(SHAPE);
    expect(Array.from(shard.labels)).toEqual([5, 65535]);
    expect(shard.pixels).toEqual(pixels);
    expect(() => decodeShard(new Uint8Array(40), 'x.bin')).toThrow(/x\.bin at byte 0: not a shard/);
    expect(() => decodeShard(bytes.subarray(0, bytes.length - 1), 'x.bin')).toThrow(/implies/);
    expect(() => encodeShard(new Uint8Array(BYTES), Int32Array.from([70000]), SHAPE)).toThrow(/u16/);
  });
});

describe('writeSplit / openSplit', () => {
  it('round-trips every subset, with a manifest describing it', async () => {
    const data = toy();
    const splitPlan = plan();
    const progress: number[] = [];
    const manifest = await writeSplit(store, data, {
      splitId: 'toy-1',
      plan: splitPlan,
      shardSize: 7,
      onProgress: (p) => progress.push(p.images),
    });
    expect(progress.at(-1)).toBe(3 * (12 + 3 + 4) * 2);
    expect(manifest.version).toBe(1);
    expect(manifest.shape).toEqual(SHAPE);
    expect(manifest.dataset).toEqual({ name: 'toy', source: 'memory:toy' });
    expect(manifest.halves.A.classes).toEqual(splitPlan.halves.A.classes);
    expect(manifest.halves.B.sourceLabels).toEqual(splitPlan.halves.B.sourceLabels);
    const train = manifest.halves.A.subsets.train;
    expect(train.count).toBe(36);
    expect(train.perClass).toEqual([12, 12, 12]);
    expect(train.shards.map((s) => s.count)).toEqual([7, 7, 7, 7, 7, 1]);
    expect(train.shards[2]!.key).toBe('splits/toy-1/A/train/shard-00002.bin');
    expect(await store.list('splits/toy-1/B/val/')).toEqual([
      'splits/toy-1/B/val/shard-00000.bin',
      'splits/toy-1/B/val/shard-00001.bin',
    ]);

    const selection = selectImages(data, splitPlan);
    const reader = await openSplit(store, 'toy-1');
    expect(reader.manifest).toEqual(manifest);
    for (const half of ['A', 'B'] as const) {
      for (const name of ['train', 'val', 'test'] as const) {
        const loaded = await reader.loadSubset(half, name);
        const chosen = selection[half][name];
        const from = chosen.source === 'train' ? data.train : data.test!;
        expect(loaded.count).toBe(chosen.indices.length);
        expect(loaded.classes).toEqual(splitPlan.halves[half].classes);
        expect(loaded.shape).toEqual(SHAPE);
        expect(loaded.labels).toEqual(chosen.labels);
        chosen.indices.forEach((index, i) => {
          expect(loaded.pixels.subarray(i * BYTES, (i + 1) * BYTES)).toEqual(
            from.pixels.subarray(index * BYTES, (index + 1) * BYTES),
          );
        });
      }
    }
  });

  it('is idempotent: an existing manifest is returned and nothing is rewritten', async () => {
    const first = await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 7 });
    const counting = new FlakyStore(store);
    const second = await writeSplit(counting, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 7 });
    expect(second).toEqual(first);
    expect(counting.puts).toEqual([]);
    const other = planSplit(CLASSES, { kind: 'random', seed: 4, caps: { valPerClass: 3 } });
    await expect(writeSplit(store, toy(), { splitId: 'toy-1', plan: other })).rejects.toThrow(
      /already exists with other classes/,
    );
  });

  it('writes the manifest last: a crash leaves no manifest, and a rerun completes', async () => {
    const clean = await writeSplit(new LocalFolderStore(join(root, 'clean')), toy(), {
      splitId: 'toy-1',
      plan: plan(),
      shardSize: 7,
    });
    const shardTotal = Object.values(clean.halves).reduce(
      (sum, half) => sum + Object.values(half.subsets).reduce((s, sub) => s + sub.shards.length, 0),
      0,
    );
    for (const failAt of [1, 5, shardTotal + 1]) {
      const target = new LocalFolderStore(join(root, `crash-${failAt}`));
      const flaky = new FlakyStore(target, failAt);
      await expect(writeSplit(flaky, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 7 })).rejects.toThrow(
        /simulated crash/,
      );
      expect(await target.stat(manifestKey('toy-1'))).toBeUndefined();
      await expect(openSplit(target, 'toy-1')).rejects.toThrow(/split 'toy-1' not found: no manifest/);
      const rerun = new FlakyStore(target);
      expect(await writeSplit(rerun, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 7 })).toEqual(clean);
      // Shards that made it before the crash are kept, not rewritten.
      expect(rerun.puts.length).toBe(shardTotal + 1 - (failAt - 1));
      expect(rerun.puts.at(-1)).toBe(manifestKey('toy-1'));
      const reader = await openSplit(target, 'toy-1');
      expect((await reader.loadSubset('B', 'train')).pixels).toEqual(
        (await (await openSplit(new LocalFolderStore(join(root, 'clean')), 'toy-1')).loadSubset('B', 'train')).pixels,
      );
    }
  });

  it('refuses a corrupted shard, naming the key and both hashes', async () => {
    const manifest = await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 7 });
    const entry = manifest.halves.B.subsets.train.shards[1]!;
    const bytes = await store.get(entry.key);
    bytes[bytes.length - 1]! ^= 0xff;
    await store.put(entry.key, bytes);
    const reader = await openSplit(store, 'toy-1');
    const failure = reader.loadSubset('B', 'train');
    await expect(failure).rejects.toBeInstanceOf(DataError);
    await expect(failure).rejects.toThrow(
      new RegExp(`shard ${entry.key} is corrupt: sha256 [0-9a-f]{64}, manifest says ${entry.sha256}`),
    );
    await expect(collect(reader.stream('B', 'train', { seed: 1, epoch: 0 }))).rejects.toThrow(/is corrupt/);
    await expect(reader.loadSubset('A', 'train')).resolves.toBeDefined();
    // A rerun of writeSplit does not repair a complete split: the manifest says it is done.
    await store.delete(entry.key);
    await expect(reader.loadSubset('B', 'train')).rejects.toThrow(/is missing, though the manifest lists it/);
  });

  it('refuses invalid split ids and a manifest for another split', async () => {
    await expect(writeSplit(store, toy(), { splitId: '../x', plan: plan() })).rejects.toThrow(/splitId/);
    const manifest: SplitManifest = await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan() });
    await store.put(manifestKey('toy-2'), new TextEncoder().encode(JSON.stringify(manifest)));
    await expect(openSplit(store, 'toy-2')).rejects.toThrow(/manifest is for split 'toy-1'/);
    await store.put(
      manifestKey('toy-3'),
      new TextEncoder().encode(JSON.stringify({ ...manifest, splitId: 'toy-3', shape: [3, 3] })),
    );
    await expect(openSplit(store, 'toy-3')).rejects.toThrow(/invalid manifest at manifest\.shape/);
    expect(shardKey('toy-1', { half: 'A', subset: 'val', index: 12 })).toBe('splits/toy-1/A/val/shard-00012.bin');
  });
});

describe('stream', () => {
  it('yields a permutation of the subset, fixed by (seed, epoch)', async () => {
    await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 5 });
    const reader = await openSplit(store, 'toy-1');
    const loaded = await reader.loadSubset('A', 'train');
    const stored = Array.from(
      { length: loaded.count },
      (_, i) => `${idOf(loaded.pixels.subarray(i * BYTES))}/${loaded.labels[i]}`,
    );
    const order = async (seed: number, epoch: number, shuffleBuffer?: number): Promise<string[]> =>
      (
        await collect(
          reader.stream('A', 'train', { seed, epoch, ...(shuffleBuffer === undefined ? {} : { shuffleBuffer }) }),
        )
      ).map((item) => `${idOf(item.pixels)}/${item.label}`);
    const first = await order(1, 0);
    expect(first.slice().sort()).toEqual(stored.slice().sort());
    expect(await order(1, 0)).toEqual(first);
    expect(await order(1, 1)).not.toEqual(first);
    expect(await order(2, 0)).not.toEqual(first);
    // Buffer 1: whole shards, in a seeded shard order.
    const unshuffled = await order(1, 0, 1);
    expect(unshuffled).not.toEqual(stored);
    const shardsSeen = unshuffled.map((item) => Math.floor(stored.indexOf(item) / 5));
    const runs = shardsSeen.filter((shard, i) => i === 0 || shard !== shardsSeen[i - 1]).length;
    expect(runs).toBe(Math.ceil(stored.length / 5));
    const big = await order(1, 0, 1000);
    expect(big.slice().sort()).toEqual(stored.slice().sort());
  });

  it('feeds makeBatches, which resumes at startBatch with identical batches', async () => {
    await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 5 });
    const reader = await openSplit(store, 'toy-1');
    const source = reader.source('B', 'train', { shuffleBuffer: 8 });
    expect(source.count).toBe(36);
    const options = { batchSize: 5, seed: 4, epoch: 1, augment: { crop: 1, mirror: true } };
    const full: Batch[] = await collect(makeBatches(source, options));
    expect(full.map((b) => b.count)).toEqual([5, 5, 5, 5, 5, 5, 5, 1]);
    for (const startBatch of [1, 3, 7])
      expect(await collect(makeBatches(source, { ...options, startBatch }))).toEqual(full.slice(startBatch));
  });

  it('lets a consumer stop early, without an unhandled rejection from the read-ahead', async () => {
    await writeSplit(store, toy(), { splitId: 'toy-1', plan: plan(), shardSize: 5 });
    let gets = 0;
    // Every read after the first fails, so the read-ahead of the second shard rejects.
    const failing = Object.assign(Object.create(store) as LocalFolderStore, {
      get: async (key: string): Promise<Buffer> => {
        gets++;
        if (gets > 1 && key.endsWith('.bin')) throw new Error(`simulated read failure: ${key}`);
        return store.get(key);
      },
    });
    gets = -1;
    const reader = await openSplit(failing, 'toy-1');
    const taken = [];
    for await (const item of reader.stream('A', 'train', { seed: 1, epoch: 0, shuffleBuffer: 1 })) {
      taken.push(item);
      break;
    }
    expect(taken).toHaveLength(1);
    expect(gets).toBe(2);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await expect(collect(reader.stream('A', 'train', { seed: 1, epoch: 0 }))).rejects.toThrow(/simulated read failure/);
  });
});

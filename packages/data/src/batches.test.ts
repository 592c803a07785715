import { describe, expect, it } from 'vitest';
import {
  type Batch,
  type InMemorySource,
  type StreamSource,
  batchesPerEpoch,
  epochOrder,
  makeBatches,
} from './batches.ts';
import type { ImageShape } from './dataset.ts';
import { deriveRng, shuffleInPlace } from './prng.ts';

const SHAPE: ImageShape = [4, 4, 3];
const BYTES = 4 * 4 * 3;

/** Image i is filled with a pattern that starts with i (two bytes), label i % 7. */
function source(count: number): InMemorySource {
  const pixels = new Uint8Array(count * BYTES);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    for (let b = 0; b < BYTES; b++) pixels[i * BYTES + b] = (i * 31 + b * 7 + 1) & 255;
    pixels[i * BYTES] = i & 255;
    pixels[i * BYTES + 1] = i >> 8;
    labels[i] = i % 7;
  }
  return { count, pixels, labels, shape: SHAPE };
}

const idOf = (images: Uint8Array, slot: number): number => images[slot * BYTES]! | (images[slot * BYTES + 1]! << 8);

async function collect(batches: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const batch of batches) out.push(batch);
  return out;
}

/** A deterministic stream over an in-memory source, standing in for shards. */
function streamOf(data: InMemorySource): StreamSource & { opened: number } {
  const made = {
    shape: data.shape,
    count: data.count,
    opened: 0,
    open(seed: number, epoch: number) {
      made.opened++;
      const order = shuffleInPlace(
        Array.from({ length: data.count }, (_, i) => i),
        deriveRng(seed, 'test-stream', epoch),
      );
      return (async function* () {
        for (const i of order) yield { pixels: data.pixels.slice(i * BYTES, (i + 1) * BYTES), label: data.labels[i]! };
      })();
    },
  };
  return made;
}

describe('batchesPerEpoch', () => {
  it('rounds up, or down with dropLast', () => {
    expect(batchesPerEpoch(100, 32, false)).toBe(4);
    expect(batchesPerEpoch(100, 32, true)).toBe(3);
    expect(batchesPerEpoch(96, 32, false)).toBe(3);
    expect(batchesPerEpoch(0, 32, false)).toBe(0);
    expect(() => batchesPerEpoch(10, 0, false)).toThrow(RangeError);
  });
});

describe('makeBatches, in memory', () => {
  it('visits every image once per epoch, with labels that match their pixels', async () => {
    const data = source(103);
    const batches = await collect(makeBatches(data, { batchSize: 10, seed: 1, epoch: 0 }));
    expect(batches.map((b) => b.count)).toEqual([10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3]);
    const ids: number[] = [];
    for (const batch of batches) {
      expect(batch.images.length).toBe(batch.count * BYTES);
      for (let slot = 0; slot < batch.count; slot++) {
        const id = idOf(batch.images, slot);
        ids.push(id);
        expect(batch.labels[slot]).toBe(id % 7);
        expect(batch.images.subarray(slot * BYTES, (slot + 1) * BYTES)).toEqual(
          data.pixels.subarray(id * BYTES, (id + 1) * BYTES),
        );
      }
    }
    expect(ids.slice().sort((a, b) => a - b)).toEqual(Array.from({ length: 103 }, (_, i) => i));
    expect(ids).toEqual(Array.from(epochOrder(103, 1, 0)));
  });

  it('drops the short last batch when asked', async () => {
    const batches = await collect(makeBatches(source(103), { batchSize: 10, seed: 1, epoch: 0, dropLast: true }));
    expect(batches).toHaveLength(10);
    expect(batches.every((b) => b.count === 10)).toBe(true);
  });

  it('is a function of (seed, epoch)', async () => {
    const data = source(64);
    const order = async (seed: number, epoch: number): Promise<number[]> =>
      (await collect(makeBatches(data, { batchSize: 16, seed, epoch }))).flatMap((b) =>
        Array.from({ length: b.count }, (_, s) => idOf(b.images, s)),
      );
    expect(await order(3, 1)).toEqual(await order(3, 1));
    expect(await order(3, 1)).not.toEqual(await order(3, 2));
    expect(await order(3, 1)).not.toEqual(await order(4, 1));
  });

  it('resumes: from startBatch k it yields exactly the batches of an uninterrupted epoch, augmentation included', async () => {
    const data = source(95);
    const options = { batchSize: 8, seed: 9, epoch: 4, augment: { crop: 2, mirror: true } };
    const full = await collect(makeBatches(data, options));
    for (const startBatch of [0, 1, 5, 11, 12]) {
      expect(await collect(makeBatches(data, { ...options, startBatch }))).toEqual(full.slice(startBatch));
    }
    expect(() => makeBatches(data, { ...options, startBatch: 13 })).toThrow(/startBatch must be an integer in 0\.\.12/);
  });

  it('augments deterministically, keeps shapes and labels, and differs by batch and epoch', async () => {
    const data = source(40);
    const plain = await collect(makeBatches(data, { batchSize: 20, seed: 2, epoch: 0 }));
    const augmented = await collect(
      makeBatches(data, { batchSize: 20, seed: 2, epoch: 0, augment: { crop: 1, mirror: true } }),
    );
    const again = await collect(
      makeBatches(data, { batchSize: 20, seed: 2, epoch: 0, augment: { crop: 1, mirror: true } }),
    );
    expect(again).toEqual(augmented);
    expect(augmented.map((b) => b.labels)).toEqual(plain.map((b) => b.labels));
    expect(augmented.map((b) => b.images.length)).toEqual(plain.map((b) => b.images.length));
    expect(augmented[0]!.images).not.toEqual(plain[0]!.images);
    const otherEpoch = await collect(
      makeBatches(data, { batchSize: 20, seed: 2, epoch: 1, augment: { crop: 1, mirror: true } }),
    );
    expect(otherEpoch[0]!.images).not.toEqual(augmented[0]!.images);
  });

  it('is fast enough on a CIFAR-sized epoch', async () => {
    const count = 10_000;
    const shape: ImageShape = [32, 32, 3];
    const data = { count, pixels: new Uint8Array(count * 3072), labels: new Int32Array(count), shape };
    const started = performance.now();
    let seen = 0;
    for await (const batch of makeBatches(data, { batchSize: 128, seed: 1, epoch: 0 })) seen += batch.count;
    const plainMs = performance.now() - started;
    expect(seen).toBe(count);
    expect(plainMs).toBeLessThan(2000);
  });
});

describe('makeBatches, from a stream', () => {
  it('batches the stream in order and resumes at startBatch with identical batches', async () => {
    const data = source(50);
    const stream = streamOf(data);
    const options = { batchSize: 7, seed: 5, epoch: 2, augment: { crop: 1, mirror: true } };
    const full = await collect(makeBatches(stream, options));
    expect(full.map((b) => b.count)).toEqual([7, 7, 7, 7, 7, 7, 7, 1]);
    const ids = full.flatMap((b) => Array.from(b.labels));
    expect(ids).toHaveLength(50);
    for (const startBatch of [1, 4, 7, 8]) {
      expect(await collect(makeBatches(stream, { ...options, startBatch }))).toEqual(full.slice(startBatch));
    }
    const dropped = await collect(makeBatches(stream, { ...options, dropLast: true }));
    expect(dropped).toEqual(full.slice(0, 7));
  });

  it('gives the same batches as the in-memory path when the stream follows epochOrder', async () => {
    const data = source(30);
    const ordered: StreamSource = {
      shape: SHAPE,
      count: 30,
      open: (seed, epoch) =>
        (async function* () {
          for (const i of epochOrder(30, seed, epoch))
            yield { pixels: data.pixels.subarray(i * BYTES, (i + 1) * BYTES), label: data.labels[i]! };
        })(),
    };
    const options = { batchSize: 8, seed: 1, epoch: 3, augment: { crop: 2, mirror: true } };
    expect(await collect(makeBatches(ordered, options))).toEqual(await collect(makeBatches(data, options)));
  });
});

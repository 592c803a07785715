import * as tf from '@tensorflow/tfjs-core';
import { LocalFolderStore } from '@transferlab/platform';
import type * as tfl from '@tensorflow/tfjs-layers';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type TrainCheckpoint,
  isTrainCheckpoint,
  loadCheckpoint,
  modelFromArtifacts,
  saveCheckpoint,
} from './checkpoint.ts';
import { buildNet } from './nets.ts';
import { type Batch, type TrainData, type TrainOptions, train } from './train.ts';
import { useTestBackend } from './test-backend.ts';

const SIZE = 8;
const CLASSES = 4;

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Each class is a bright 3x3 patch in its own quadrant over noise: learnable in a few epochs.
function images(count: number, seed: number): { images: Uint8Array; labels: Int32Array; count: number } {
  const random = mulberry32(seed);
  const pixels = new Uint8Array(count * SIZE * SIZE);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = i % CLASSES;
    labels[i] = label;
    const top = (label >> 1) * 4;
    const left = (label & 1) * 4;
    for (let y = 0; y < SIZE; y++) {
      for (let x = 0; x < SIZE; x++) {
        const inPatch = y >= top && y < top + 3 && x >= left && x < left + 3;
        pixels[i * SIZE * SIZE + y * SIZE + x] = Math.floor(random() * 80) + (inPatch ? 170 : 0);
      }
    }
  }
  return { images: pixels, labels, count };
}

function syntheticData(count: number, batchSize: number): TrainData {
  const all = images(count, 7);
  const pixels = SIZE * SIZE;
  const batchesPerEpoch = Math.floor(count / batchSize);
  return {
    batchesPerEpoch,
    val: images(32, 99),
    async *batches(epoch: number, startBatch: number): AsyncIterable<Batch> {
      const random = mulberry32(1000 + epoch);
      const order = Array.from({ length: count }, (_, i) => i);
      for (let i = count - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        [order[i], order[j]] = [order[j] ?? 0, order[i] ?? 0];
      }
      for (let b = startBatch; b < batchesPerEpoch; b++) {
        const picked = order.slice(b * batchSize, (b + 1) * batchSize);
        const batch = new Uint8Array(picked.length * pixels);
        picked.forEach((index, k) => batch.set(all.images.subarray(index * pixels, (index + 1) * pixels), k * pixels));
        yield {
          images: batch,
          labels: Int32Array.from(picked, (index) => all.labels[index] ?? 0),
          count: picked.length,
        };
      }
    },
  };
}

const net = (seed: number): ReturnType<typeof buildNet> =>
  buildNet({ kind: 'small', width: 0.25 }, { inputShape: [SIZE, SIZE, 1], numClasses: CLASSES, seed });

// A hash, not the bytes: a failed comparison of raw weights prints a diff too long to read.
function fingerprint(model: tfl.LayersModel): string {
  const hash = createHash('sha256');
  for (const weight of model.getWeights()) hash.update(new Uint8Array(new Float32Array(weight.dataSync()).buffer));
  return hash.digest('hex');
}

const base: Omit<TrainOptions, 'maxEpochs' | 'patience'> = {
  learningRate: 0.05,
  momentum: 0.9,
  weightDecay: 5e-4,
  schedule: { stepEpochs: 2, gamma: 0.1 },
};

let dir: string;
beforeAll(async () => {
  await useTestBackend();
  dir = await mkdtemp(join(tmpdir(), 'transferlab-train-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('train', () => {
  test('a resumed run ends bit-identical to an uninterrupted one, from an epoch boundary and mid-epoch', async () => {
    const data = syntheticData(64, 16);
    const options: TrainOptions = { ...base, maxEpochs: 3, patience: 10 };

    const checkpoints: TrainCheckpoint[] = [];
    const reference = net(1);
    const full = await train(reference, data, {
      ...options,
      saveCheckpoint: async (checkpoint) => {
        checkpoints.push(checkpoint);
      },
    });
    expect(full.stoppedBy).toBe('budget');
    expect(full.epochs).toBe(3);
    expect(full.history.map((h) => h.learningRate)).toEqual([0.05, 0.05, 0.05 * 0.1]);
    const expected = fingerprint(reference);
    // Something was learned: the loss fell.
    expect(full.history[2]?.loss).toBeLessThan(full.history[0]?.loss ?? 0);

    // From the end of epoch 0, through the object store.
    const atEpoch = checkpoints.find((c) => c.state.epoch === 1 && c.state.nextBatch === 0);
    expect(atEpoch).toBeDefined();
    const store = new LocalFolderStore(dir);
    await saveCheckpoint(store, 'cells/resume', atEpoch!);
    const loaded = await loadCheckpoint(store, 'cells/resume');
    expect(loaded && isTrainCheckpoint(loaded)).toBe(true);
    // The same seed (so the same dropout masks) but its initial weights: the trained ones must come
    // from the checkpoint.
    const fromEpoch = net(1);
    const resumed = await train(fromEpoch, data, { ...options, resume: loaded as TrainCheckpoint });
    expect(fingerprint(fromEpoch)).toEqual(expected);
    expect(resumed.history).toEqual(full.history.map((h, i) => ({ ...h, seconds: resumed.history[i]?.seconds })));

    // Another seed means other dropout masks: refused rather than silently diverging.
    await expect(train(net(2), data, { ...options, resume: atEpoch! })).rejects.toThrow(/drop6 seed/);

    // Interrupted mid-epoch by the signal, then resumed from the checkpoint it wrote.
    const controller = new AbortController();
    let interruptedAt: TrainCheckpoint | undefined;
    const stopped = net(1);
    const interrupted = await train(stopped, data, {
      ...options,
      signal: controller.signal,
      onStep: ({ step }) => {
        if (step === 6) controller.abort();
      },
      saveCheckpoint: async (checkpoint) => {
        interruptedAt = checkpoint;
      },
    });
    expect(interrupted.stoppedBy).toBe('interrupted');
    expect(interruptedAt?.state).toMatchObject({ epoch: 1, nextBatch: 2, step: 6 });
    const fromMiddle = await modelFromArtifacts(interruptedAt!.model);
    const finished = await train(fromMiddle, data, { ...options, resume: interruptedAt });
    expect(fingerprint(fromMiddle)).toEqual(expected);
    expect(finished.history.map((h) => [h.loss, h.valTop1])).toEqual(full.history.map((h) => [h.loss, h.valTop1]));
    for (const model of [reference, fromEpoch, stopped, fromMiddle]) model.dispose();
  });

  test('stops by patience once validation top-1 stops improving, and leaks no tensors', async () => {
    const data = syntheticData(32, 16);
    const model = net(5);
    const before = tf.memory().numTensors;
    const perEpoch: number[] = [];
    // A zero learning rate never improves on epoch 0; one rate phase lets patience fire at once.
    const result = await train(model, data, {
      ...base,
      schedule: { stepEpochs: 2, gamma: 1 },
      learningRate: 0,
      maxEpochs: 10,
      patience: 2,
      onEpoch: () => perEpoch.push(tf.memory().numTensors),
    });
    expect(result.stoppedBy).toBe('patience');
    expect(result.epochs).toBe(3);
    expect(result.bestEpoch).toBe(0);
    expect(new Set(perEpoch).size).toBe(1);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('early stopping fires only in the last learning-rate phase, after minEpochs, and is off without patience', async () => {
    const data = syntheticData(32, 16);
    const flat = { ...base, learningRate: 0 };
    // Rate drops after epochs 2 and 4 of 6: the last phase starts at epoch 5 (1-based), so a
    // net that never improves on epoch 1 still trains through every drop.
    const lastPhase = await train(net(6), data, { ...flat, maxEpochs: 6, patience: 1 });
    expect(lastPhase.stoppedBy).toBe('patience');
    expect(lastPhase.epochs).toBe(5);

    const held = await train(net(6), data, {
      ...flat,
      schedule: { stepEpochs: 2, gamma: 1 },
      maxEpochs: 4,
      patience: 1,
      minEpochs: 3,
    });
    expect(held.stoppedBy).toBe('patience');
    expect(held.epochs).toBe(3);

    const off = await train(net(6), data, { ...flat, maxEpochs: 3 });
    expect(off.stoppedBy).toBe('budget');
    expect(off.epochs).toBe(3);
    expect(off.imagesPerSecond).toBeGreaterThan(0);
  });
});

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, test } from 'vitest';
import type { TrainCheckpoint } from './checkpoint.ts';
import { buildNet } from './nets.ts';
import { cacheablePrefix, prefixFeatures, suffixModel, type PrefixCut } from './prefix-cache.ts';
import { type Batch, type FeatureBatch, type TrainData, type TrainOptions, train } from './train.ts';
import { disposeNamedWeights, namedWeightsOf, transplant } from './transplant.ts';
import { useTestBackend } from './test-backend.ts';

const SIZE = 8;
const CLASSES = 4;
const IMAGE = SIZE * SIZE;

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

// Each class a bright patch in its own quadrant over noise, as in train.test.ts.
function images(count: number, seed: number): { images: Uint8Array; labels: Int32Array; count: number } {
  const random = mulberry32(seed);
  const pixels = new Uint8Array(count * IMAGE);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = i % CLASSES;
    labels[i] = label;
    const top = (label >> 1) * 4;
    const left = (label & 1) * 4;
    for (let y = 0; y < SIZE; y++)
      for (let x = 0; x < SIZE; x++) {
        const inPatch = y >= top && y < top + 3 && x >= left && x < left + 3;
        pixels[i * IMAGE + y * SIZE + x] = Math.floor(random() * 80) + (inPatch ? 170 : 0);
      }
  }
  return { images: pixels, labels, count };
}

const TRAIN = images(50, 7);
const VAL = images(21, 99);

function epochOrder(epoch: number): number[] {
  const random = mulberry32(1000 + epoch);
  const order = Array.from({ length: TRAIN.count }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * 50 images in batches of 16: three full batches and one of 2 per epoch. With `cache`, full
 * batches are gathered from prefix outputs computed once in padded passes of 16, and the short
 * batch, whose images change every epoch, goes as images (as the runner does).
 */
function data(batchSize: number, cache?: { cut: PrefixCut; features: Float32Array }): TrainData {
  const batchesPerEpoch = Math.ceil(TRAIN.count / batchSize);
  return {
    batchesPerEpoch,
    val: VAL,
    ...(cache ? { prefix: { cut: cache.cut } } : {}),
    async *batches(epoch: number, startBatch: number): AsyncIterable<Batch | FeatureBatch> {
      const order = epochOrder(epoch);
      for (let b = startBatch; b < batchesPerEpoch; b++) {
        const picked = order.slice(b * batchSize, (b + 1) * batchSize);
        const labels = Int32Array.from(picked, (index) => TRAIN.labels[index]!);
        if (cache && picked.length === batchSize) {
          const size = cache.cut.featureSize;
          const features = new Float32Array(picked.length * size);
          picked.forEach((index, k) =>
            features.set(cache.features.subarray(index * size, (index + 1) * size), k * size),
          );
          yield { features, labels, count: picked.length };
          continue;
        }
        const batch = new Uint8Array(picked.length * IMAGE);
        picked.forEach((index, k) => batch.set(TRAIN.images.subarray(index * IMAGE, (index + 1) * IMAGE), k * IMAGE));
        yield { images: batch, labels, count: picked.length };
      }
    },
  };
}

function fingerprint(model: tfl.LayersModel): string {
  const hash = createHash('sha256');
  for (const weight of model.getWeights()) hash.update(new Uint8Array(new Float32Array(weight.dataSync()).buffer));
  return hash.digest('hex');
}

const net = (seed: number): tfl.LayersModel =>
  buildNet({ kind: 'small', width: 0.25, lrn: true }, { inputShape: [SIZE, SIZE, 1], numClasses: CLASSES, seed });

/**
 * A frozen cell: the first n layers copied from another net and frozen. The source's biases are
 * moved off zero, as a trained net's are: a zero bias would hide a fused kernel's rounding.
 */
function frozenNet(n: number): tfl.LayersModel {
  const source = net(9);
  for (const layer of source.layers) {
    const [kernel, bias] = layer.getWeights();
    if (kernel === undefined || bias === undefined) continue;
    const shifted = tf.add(bias, tf.linspace(0.01, 0.1, bias.size));
    layer.setWeights([kernel, shifted]);
    shifted.dispose();
  }
  const weights = namedWeightsOf(source);
  const model = net(1);
  try {
    transplant(weights, model, { n, mode: 'frozen' });
  } finally {
    disposeNamedWeights(weights);
    source.dispose();
  }
  return model;
}

const options: TrainOptions = {
  learningRate: 0.05,
  momentum: 0.9,
  weightDecay: 5e-4,
  schedule: { stepEpochs: 2, gamma: 0.1 },
  maxEpochs: 3,
};

let backend: string;
beforeAll(async () => {
  backend = await useTestBackend();
});

describe('cacheablePrefix', () => {
  test('cuts after the last frozen layer, never past a dropout, and not at all in an unfrozen net', () => {
    const expected: Record<number, string> = {
      1: 'pool1',
      2: 'pool2',
      3: 'conv3',
      4: 'conv4',
      5: 'flatten',
      6: 'fc6',
      7: 'fc6',
    };
    for (const [n, layer] of Object.entries(expected)) {
      const model = frozenNet(Number(n));
      const cut = cacheablePrefix(model);
      expect(cut?.layer, `n=${n}`).toBe(layer);
      // n=7: fc7 is frozen too, but drop6 below it draws a new mask every step in training.
      expect(cut?.frozenLayers.length).toBe(Math.min(Number(n), 6));
      expect(cut?.featureSize).toBe(cut?.featureShape.reduce((a, b) => a * b, 1));
      model.dispose();
    }
    const fresh = net(1);
    expect(cacheablePrefix(fresh)).toBeUndefined();
    fresh.dispose();
  });

  test("the net above the cut shares the net's weights and, on the prefix's outputs, gives the net's logits", () => {
    const model = frozenNet(3);
    const cut = cacheablePrefix(model)!;
    const suffix = suffixModel(model, cut);
    expect(suffix.trainableWeights.map((w) => w.name)).toEqual(model.trainableWeights.map((w) => w.name));
    const features = prefixFeatures(
      model,
      cut,
      { count: 5, images: (start, count) => TRAIN.images.subarray(start * IMAGE, (start + count) * IMAGE) },
      // As predict() runs: outside a gradient scope.
      { chunkSize: 5, as: 'inference' },
    );
    const [whole, above] = tf.tidy(() => [
      model.predict(
        tf.tensor4d(
          Float32Array.from(TRAIN.images.subarray(0, 5 * IMAGE), (v) => v / 255 - 0.5),
          [5, SIZE, SIZE, 1],
        ),
      ) as tf.Tensor,
      suffix.predict(tf.tensor(features, [5, ...cut.featureShape])) as tf.Tensor,
    ]);
    expect(Array.from(above!.dataSync())).toEqual(Array.from(whole!.dataSync()));
    tf.dispose([whole!, above!]);
    // A second cut of the same net still finds the chain, though its layers now serve two models.
    expect(cacheablePrefix(model)?.layer).toBe('conv3');
    model.dispose();
  });
});

describe('training from cached prefix outputs', () => {
  // The tests run on the backend named by TRANSFERLAB_BACKEND (scripts/test.sh: tensorflow,
  // then wasm for nn), else cpu.
  test.each([1, 3, 6, 7])(
    'frozen n=%i: the same weights, losses and validation, bit for bit, as training from images',
    async (n) => {
      const reference = frozenNet(n);
      const uncached = await train(reference, data(16), options);

      const model = frozenNet(n);
      const cut = cacheablePrefix(model)!;
      const features = prefixFeatures(
        model,
        cut,
        { count: TRAIN.count, images: (start, count) => TRAIN.images.subarray(start * IMAGE, (start + count) * IMAGE) },
        { chunkSize: 16 },
      );
      const cached = await train(model, data(16, { cut, features }), options);

      expect(fingerprint(model), `backend ${backend}`).toBe(fingerprint(reference));
      const strip = (h: typeof uncached.history): unknown[] => h.map(({ seconds: _s, ...rest }) => rest);
      expect(strip(cached.history)).toEqual(strip(uncached.history));
      // Something was trained: the weights above the cut moved.
      expect(fingerprint(model)).not.toBe(fingerprint(frozenNet(n)));
      reference.dispose();
      model.dispose();
    },
  );

  test('a cached run resumed mid-epoch ends where the uncached run does', async () => {
    const reference = frozenNet(2);
    await train(reference, data(16), options);

    const cachedData = (model: tfl.LayersModel): TrainData => {
      const cut = cacheablePrefix(model)!;
      const features = prefixFeatures(
        model,
        cut,
        { count: TRAIN.count, images: (start, count) => TRAIN.images.subarray(start * IMAGE, (start + count) * IMAGE) },
        { chunkSize: 16 },
      );
      return data(16, { cut, features });
    };
    const controller = new AbortController();
    let saved: TrainCheckpoint | undefined;
    const first = frozenNet(2);
    const stopped = await train(first, cachedData(first), {
      ...options,
      signal: controller.signal,
      onStep: ({ step }) => {
        if (step === 6) controller.abort();
      },
      saveCheckpoint: async (checkpoint) => {
        saved = checkpoint;
      },
    });
    expect(stopped.stoppedBy).toBe('interrupted');
    const second = frozenNet(2);
    await train(second, cachedData(second), { ...options, resume: saved });
    expect(fingerprint(second)).toBe(fingerprint(reference));
    for (const model of [reference, first, second]) model.dispose();
  });
});

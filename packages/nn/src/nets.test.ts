import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, test } from 'vitest';
import { LocalResponseNormalization, SeededDropout } from './layers.ts';
import { LEARNED_LAYERS, buildNet, imagesToTensor, inputShapeOf, numClassesOf, reinitialiseLayer } from './nets.ts';
import { useTestBackend } from './test-backend.ts';

beforeAll(async () => {
  await useTestBackend();
});

const learned = (model: tfl.LayersModel): string[] =>
  model.layers.filter((l) => l.weights.length > 0).map((l) => l.name);
const kernelShapes = (model: tfl.LayersModel): number[][] =>
  LEARNED_LAYERS.map((name) => model.getLayer(name).weights[0]?.shape as number[]);
const bytes = (tensor: tf.Tensor): Buffer => Buffer.from(new Float32Array(tensor.dataSync()).buffer);

describe('buildNet', () => {
  test('caffenet at 227 px has the paper geometry: 8 learned layers, 55 -> 27 -> 13 -> 6', () => {
    const model = buildNet({ kind: 'caffenet', width: 0.125 }, { inputShape: [227, 227, 3], numClasses: 500, seed: 1 });
    expect(learned(model)).toEqual([...LEARNED_LAYERS]);
    expect(model.getLayer('conv1').outputShape).toEqual([null, 55, 55, 12]);
    expect(model.getLayer('pool1').outputShape).toEqual([null, 27, 27, 12]);
    expect(model.getLayer('pool2').outputShape).toEqual([null, 13, 13, 32]);
    expect(model.getLayer('pool5').outputShape).toEqual([null, 6, 6, 32]);
    expect(kernelShapes(model)).toEqual([
      [11, 11, 3, 12],
      [5, 5, 12, 32],
      [3, 3, 32, 48],
      [3, 3, 48, 48],
      [3, 3, 48, 32],
      [6 * 6 * 32, 512],
      [512, 512],
      [512, 500],
    ]);
    expect(model.layers.filter((l) => l instanceof LocalResponseNormalization).map((l) => l.name)).toEqual([
      'norm1',
      'norm2',
    ]);
    expect(model.layers.filter((l) => l instanceof SeededDropout).map((l) => l.name)).toEqual(['drop6', 'drop7']);
    expect(numClassesOf(model)).toBe(500);
    model.dispose();
  });

  test('small has 8 learned layers for 28x28 grey and 32x32 colour, and logits out', () => {
    for (const inputShape of [
      [28, 28, 1],
      [32, 32, 3],
    ] as Array<[number, number, number]>) {
      const model = buildNet({ kind: 'small', width: 0.25 }, { inputShape, numClasses: 5, seed: 3 });
      expect(learned(model)).toEqual([...LEARNED_LAYERS]);
      expect(model.getLayer('pool5').outputShape).toEqual([null, 4, 4, 16]);
      expect(model.getLayer('fc6').outputShape).toEqual([null, 128]);
      expect(inputShapeOf(model)).toEqual(inputShape);
      expect(model.layers.some((l) => l instanceof LocalResponseNormalization)).toBe(false);
      const logits = model.predict(tf.zeros([2, ...inputShape])) as tf.Tensor;
      expect(logits.shape).toEqual([2, 5]);
      tf.dispose(logits);
      model.dispose();
    }
    const withLrn = buildNet(
      { kind: 'small', width: 0.25, lrn: true },
      { inputShape: [28, 28, 1], numClasses: 5, seed: 3 },
    );
    expect(withLrn.layers.filter((l) => l instanceof LocalResponseNormalization)).toHaveLength(2);
    withLrn.dispose();
  });

  test('width is rounded with a floor of one channel', () => {
    const model = buildNet({ kind: 'small', width: 0.01 }, { inputShape: [28, 28, 1], numClasses: 3, seed: 1 });
    expect(kernelShapes(model).map((shape) => shape.at(-1))).toEqual([1, 1, 1, 1, 1, 5, 5, 3]);
    model.dispose();
  });

  test('refuses an input too small for the net, naming the stage', () => {
    expect(() => buildNet({ kind: 'caffenet' }, { inputShape: [32, 32, 3], numClasses: 10, seed: 1 })).toThrow(
      /32x32 is too small for the caffenet net: pool2/,
    );
  });

  test('the same seed gives the same net, another seed another', () => {
    const options = { inputShape: [12, 12, 1] as [number, number, number], numClasses: 4 };
    const a = buildNet({ kind: 'small', width: 0.25 }, { ...options, seed: 7 });
    const b = buildNet({ kind: 'small', width: 0.25 }, { ...options, seed: 7 });
    const c = buildNet({ kind: 'small', width: 0.25 }, { ...options, seed: 8 });
    a.getWeights().forEach((weight, i) => {
      expect(bytes(weight).equals(bytes(b.getWeights()[i]!))).toBe(true);
    });
    // Kernels differ; biases are zero in both.
    expect(bytes(a.getWeights()[0]!).equals(bytes(c.getWeights()[0]!))).toBe(false);
    // Layer seeds are hashed, not offset: no layer of one net repeats another layer's stream.
    const firstValues = (model: tfl.LayersModel): number[] =>
      LEARNED_LAYERS.map((name) => model.getLayer(name).getWeights()[0]!.dataSync()[0]!);
    expect(new Set([...firstValues(a), ...firstValues(c)]).size).toBe(16);
    for (const model of [a, b, c]) model.dispose();
  });

  test('reinitialiseLayer gives a layer the weights buildNet gives it with that seed', () => {
    const options = { inputShape: [12, 12, 1] as [number, number, number], numClasses: 4 };
    const fresh = buildNet({ kind: 'small', width: 0.25 }, { ...options, seed: 11 });
    const other = buildNet({ kind: 'small', width: 0.25 }, { ...options, seed: 12 });
    for (const name of LEARNED_LAYERS) reinitialiseLayer(other, name, 11);
    fresh.getWeights().forEach((weight, i) => {
      expect(bytes(weight).equals(bytes(other.getWeights()[i]!))).toBe(true);
    });
    fresh.dispose();
    other.dispose();
  });
});

describe("the paper's net options", () => {
  test('paper init: Gaussian kernels of std 0.01 (0.005 on fc6, fc7), biases 1 on conv2, conv4, conv5, fc6, fc7', () => {
    const model = buildNet(
      { kind: 'small', width: 1, init: 'paper' },
      { inputShape: [32, 32, 3], numClasses: 10, seed: 3 },
    );
    const std = (values: Float32Array): number => {
      const m = values.reduce((s, v) => s + v, 0) / values.length;
      return Math.sqrt(values.reduce((s, v) => s + (v - m) ** 2, 0) / values.length);
    };
    const expectedStd = {
      conv1: 0.01,
      conv2: 0.01,
      conv3: 0.01,
      conv4: 0.01,
      conv5: 0.01,
      fc6: 0.005,
      fc7: 0.005,
      fc8: 0.01,
    };
    const biasOne = new Set(['conv2', 'conv4', 'conv5', 'fc6', 'fc7']);
    for (const name of LEARNED_LAYERS) {
      const [kernel, bias] = model.getLayer(name).getWeights();
      // Thousands of draws: the sample std is within a few percent of the target.
      expect(std(kernel!.dataSync() as Float32Array)).toBeCloseTo(expectedStd[name], 3);
      expect(new Set(bias!.dataSync()).size).toBe(1);
      expect(bias!.dataSync()[0]).toBe(biasOne.has(name) ? 1 : 0);
    }
    // reinitialiseLayer draws the same paper weights back.
    const before = bytes(model.getLayer('fc6').getWeights()[1]!);
    reinitialiseLayer(model, 'fc6', 3, 'paper');
    expect(bytes(model.getLayer('fc6').getWeights()[1]!).equals(before)).toBe(true);
    model.dispose();
  });

  test('LRN can be switched on for the small net and off for caffenet; dropout masks can have their own seed', () => {
    const shape = { inputShape: [32, 32, 3] as [number, number, number], numClasses: 10, seed: 1 };
    const norms = (model: tfl.LayersModel): string[] =>
      model.layers.filter((l) => l instanceof LocalResponseNormalization).map((l) => l.name);
    expect(norms(buildNet({ kind: 'small', width: 0.25 }, shape))).toEqual([]);
    expect(norms(buildNet({ kind: 'small', width: 0.25, lrn: true }, shape))).toEqual(['norm1', 'norm2']);
    const own = buildNet({ kind: 'small', width: 0.25 }, { ...shape, dropoutSeed: 99 });
    const shared = buildNet({ kind: 'small', width: 0.25 }, shape);
    const seedOf = (model: tfl.LayersModel): number => (model.getLayer('drop6') as SeededDropout).seed;
    expect(seedOf(own)).not.toBe(seedOf(shared));
    // The init does not depend on the dropout stream.
    expect(bytes(own.getLayer('conv1').getWeights()[0]!).equals(bytes(shared.getLayer('conv1').getWeights()[0]!))).toBe(
      true,
    );
  });
});

describe('imagesToTensor', () => {
  test('scales uint8 to [0, 1] and subtracts the mean, per channel when given one per channel', () => {
    const images = Uint8Array.from([0, 255, 51, 102]);
    const single = imagesToTensor({ images, count: 1 }, [1, 2, 2]);
    expect(Array.from(single.dataSync())).toEqual([-0.5, 0.5, 0.2 - 0.5, 0.4 - 0.5].map(Math.fround));
    const perChannel = imagesToTensor({ images, count: 1 }, [1, 2, 2], [0, 1]);
    expect(Array.from(perChannel.dataSync())).toEqual([0, 0, 0.2, 0.4 - 1].map(Math.fround));
    expect(() => imagesToTensor({ images, count: 2 }, [1, 2, 2])).toThrow(/expected 2 images of 1x2x2/);
    tf.dispose([single, perChannel]);
  });
});

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, test } from 'vitest';
import { LocalResponseNormalization, SeededDropout, setDropoutStep } from './layers.ts';
import { useTestBackend } from './test-backend.ts';

beforeAll(async () => {
  await useTestBackend();
});

describe('LocalResponseNormalization', () => {
  test("computes Caffe's LRN: x / (1 + alpha/5 * sum of squares over 5 channels)^0.75", () => {
    const layer = new LocalResponseNormalization({ name: 'norm1' });
    const x = tf.tensor4d([1, 2, 3, 4, 5, 6], [1, 1, 1, 6]);
    const y = layer.apply(x) as tf.Tensor;
    // Channel 0 sees channels 0..2 (radius 2): 1 + 4 + 9 = 14.
    expect(y.dataSync()[0]).toBeCloseTo(1 / (1 + (1e-4 / 5) * 14) ** 0.75, 6);
    expect(layer.getConfig()).toMatchObject({ depthRadius: 2, bias: 1, alpha: 1e-4 / 5, beta: 0.75 });
    tf.dispose([x, y]);
  });
});

describe('SeededDropout', () => {
  const model = (): tfl.LayersModel => {
    const input = tfl.input({ shape: [64] });
    const output = new SeededDropout({ name: 'drop6', rate: 0.5, seed: 42 }).apply(input) as tfl.SymbolicTensor;
    return tfl.model({ inputs: input, outputs: output });
  };
  const run = (net: tfl.LayersModel, training: boolean): Float32Array => {
    const x = tf.ones([2, 64]);
    const y = net.apply(x, { training }) as tf.Tensor;
    const values = y.dataSync() as Float32Array;
    tf.dispose([x, y]);
    return values;
  };

  test('is the identity at inference', () => {
    expect(Array.from(run(model(), false))).toEqual(new Array(128).fill(1));
  });

  test('draws its mask from (seed, step): the same step repeats it, another step does not', () => {
    const a = model();
    const b = model();
    setDropoutStep(a, 5);
    setDropoutStep(b, 5);
    const first = run(a, true);
    expect(Array.from(run(b, true))).toEqual(Array.from(first));
    // Inverted dropout: kept units are scaled by 1 / (1 - rate).
    expect(new Set(first)).toEqual(new Set([0, 2]));
    setDropoutStep(b, 6);
    expect(Array.from(run(b, true))).not.toEqual(Array.from(first));
  });
});

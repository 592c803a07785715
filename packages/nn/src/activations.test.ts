import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { beforeAll, describe, expect, test } from 'vitest';
import { layerActivations, poolWindow } from './activations.ts';
import { LEARNED_LAYERS, buildNet, imagesToTensor } from './nets.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('poolWindow', () => {
  test('the smallest power of two that fits, global pooling at most', () => {
    expect(poolWindow([32, 32, 32], 32 * 32 * 32)).toBe(1);
    expect(poolWindow([32, 32, 32], 2048)).toBe(4);
    expect(poolWindow([7, 7, 64], 64 * 16)).toBe(2);
    // Channels alone exceed the budget: the whole map, never more.
    expect(poolWindow([8, 8, 96], 10)).toBe(8);
  });
});

describe('layerActivations', () => {
  test("each layer's output per image, pooled when wide, the same across batch sizes", () => {
    const inputShape: [number, number, number] = [16, 16, 3];
    const model = buildNet({ kind: 'small', width: 0.25 }, { inputShape, numClasses: 4, seed: 2 });
    const count = 5;
    const images = Uint8Array.from({ length: count * 16 * 16 * 3 }, (_, i) => (i * 37) % 256);
    const layers = LEARNED_LAYERS.slice(0, 7);
    const all = layerActivations(model, { images, count }, { layers, maxFeatures: 256, batchSize: 2 });
    expect(all.map((a) => a.layer)).toEqual(layers);
    for (const activations of all) {
      if (activations.pool > 1) expect(activations.features).toBeLessThanOrEqual(256);
      expect(activations.data.length).toBe(count * activations.features);
    }
    // conv1 (8 channels at width 0.25, 16×16) is pooled to fit 256 values: 4×4 windows.
    expect(all[0]!.pool).toBe(4);
    expect(all[0]!.features).toBe(4 * 4 * 8);
    // fc7 is the same as a direct forward pass to that layer.
    const fc7 = tf.tidy(() => {
      const probe = tf.tidy(() => imagesToTensor({ images, count }, inputShape));
      let x: tf.Tensor = probe;
      for (const layer of model.layers.filter((l) => l.getClassName() !== 'InputLayer')) {
        x = layer.apply(x) as tf.Tensor;
        if (layer.name === 'fc7') break;
      }
      return x.dataSync();
    });
    expect(Array.from(all[6]!.data)).toEqual(Array.from(fc7));
    const oneBatch = layerActivations(model, { images, count }, { layers, maxFeatures: 256, batchSize: 64 });
    for (let i = 0; i < layers.length; i++) expect(oneBatch[i]!.data).toEqual(all[i]!.data);
    model.dispose();
  });
});

import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, test } from 'vitest';
import { evaluate } from './evaluate.ts';
import { useTestBackend } from './test-backend.ts';

beforeAll(async () => {
  await useTestBackend();
});

// 1x1 images with one channel per class and an identity classifier: the logits are the pixels
// (minus the mean), so the ranking of classes can be read off the pixel values.
function pixelClassifier(classes: number): tfl.LayersModel {
  const model = tfl.sequential({
    layers: [tfl.layers.flatten({ inputShape: [1, 1, classes] }), tfl.layers.dense({ units: classes })],
  });
  model.layers[1]!.setWeights([tf.eye(classes), tf.zeros([classes])]);
  return model;
}

describe('evaluate', () => {
  test('top-1, top-5 and per-class accuracy, hand-checked, across batches', () => {
    const model = pixelClassifier(6);
    const data = {
      images: Uint8Array.from([
        ...[250, 10, 20, 30, 40, 50], // label 0: ranked first            -> top-1 and top-5
        ...[10, 250, 20, 30, 40, 50], // label 2: ranked fifth            -> top-5 only
        ...[10, 250, 20, 30, 40, 50], // label 0: ranked sixth            -> neither
        ...[0, 0, 0, 0, 200, 0], //      label 4: ranked first            -> top-1 and top-5
      ]),
      labels: Int32Array.from([0, 2, 0, 4]),
      count: 4,
    };
    const result = evaluate(model, data, { batchSize: 3 });
    expect(result.top1).toBe(0.5);
    expect(result.top5).toBe(0.75);
    expect(result.top1Error).toBe(0.5);
    expect(result.top5Error).toBe(0.25);
    expect(result.count).toBe(4);
    expect(result.perClass).toEqual([0.5, Number.NaN, 0, Number.NaN, 1, Number.NaN]);
  });

  test('top-5 is capped by the number of classes', () => {
    const model = pixelClassifier(3);
    const data = { images: Uint8Array.from([200, 100, 0, 200, 100, 0]), labels: Int32Array.from([2, 0]), count: 2 };
    const result = evaluate(model, data);
    expect(result.top1).toBe(0.5);
    expect(result.top5).toBe(1);
  });

  test('refuses a label outside the classes', () => {
    const model = pixelClassifier(3);
    expect(() =>
      evaluate(model, { images: Uint8Array.from([1, 2, 3]), labels: Int32Array.from([3]), count: 1 }),
    ).toThrow(/label 3 of image 0 is outside 0..2/);
  });
});

import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { beforeAll, describe, expect, test } from 'vitest';
import { LEARNED_LAYERS, buildNet } from './nets.ts';
import { train } from './train.ts';
import { type NamedWeights, disposeNamedWeights, namedWeightsOf, transplant } from './transplant.ts';
import { useTestBackend } from './test-backend.ts';

const SHAPE: [number, number, number] = [8, 8, 1];
const net = (seed: number, width = 0.25): tfl.LayersModel =>
  buildNet({ kind: 'small', width }, { inputShape: SHAPE, numClasses: 3, seed });

const bytes = (tensor: tf.Tensor): Buffer => Buffer.from(new Float32Array(tensor.dataSync()).buffer);
/** Per learned layer: are its kernel and bias bitwise equal in a and b? */
function sameLayers(a: NamedWeights, b: NamedWeights): boolean[] {
  return LEARNED_LAYERS.map((name) => {
    const x = a.get(name)!;
    const y = b.get(name)!;
    return bytes(x.kernel).equals(bytes(y.kernel)) && bytes(x.bias).equals(bytes(y.bias));
  });
}
const trainable = (model: tfl.LayersModel): boolean[] => LEARNED_LAYERS.map((name) => model.getLayer(name).trainable);

// Noise images with a fixed labelling: enough to move every trainable weight.
async function trainBriefly(model: tfl.LayersModel): Promise<void> {
  const count = 12;
  const images = Uint8Array.from({ length: count * 64 }, (_, i) => (i * 37) % 251);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 3);
  await train(
    model,
    {
      batchesPerEpoch: 2,
      val: { images, labels, count },
      async *batches(_epoch, start) {
        for (let b = start; b < 2; b++) {
          yield {
            images: images.subarray(b * 6 * 64, (b + 1) * 6 * 64),
            labels: labels.subarray(b * 6, (b + 1) * 6),
            count: 6,
          };
        }
      },
    },
    { learningRate: 0.05, schedule: { stepEpochs: 10, gamma: 0.1 }, maxEpochs: 1, patience: 1 },
  );
}

let source: tfl.LayersModel;
let sourceWeights: NamedWeights;
beforeAll(async () => {
  await useTestBackend();
  source = net(1);
  sourceWeights = namedWeightsOf(source);
});

describe('transplant', () => {
  test('frozen: copies layers 1..n bit for bit, keeps them fixed in training, re-initialised layers train', async () => {
    const target = net(2);
    const fresh = namedWeightsOf(target);
    transplant(sourceWeights, target, { n: 3, mode: 'frozen' });
    expect(trainable(target)).toEqual([false, false, false, true, true, true, true, true]);
    const copied = namedWeightsOf(target);
    expect(sameLayers(copied, sourceWeights)).toEqual([true, true, true, false, false, false, false, false]);
    // Layers 4..8 are the target's own initialisation, not the source's.
    expect(sameLayers(copied, fresh).slice(3)).toEqual([true, true, true, true, true]);

    await trainBriefly(target);
    const trained = namedWeightsOf(target);
    expect(sameLayers(trained, sourceWeights)).toEqual([true, true, true, false, false, false, false, false]);
    expect(sameLayers(trained, fresh).slice(3)).toEqual([false, false, false, false, false]);
    for (const w of [fresh, copied, trained]) disposeNamedWeights(w);
    target.dispose();
  });

  test('fine-tuned: copies layers 1..n and trains every layer', async () => {
    const target = net(2);
    transplant(sourceWeights, target, { n: 2, mode: 'fine-tuned' });
    expect(trainable(target)).toEqual(new Array(8).fill(true));
    const copied = namedWeightsOf(target);
    expect(sameLayers(copied, sourceWeights).slice(0, 3)).toEqual([true, true, false]);
    await trainBriefly(target);
    const trained = namedWeightsOf(target);
    expect(sameLayers(trained, copied)).toEqual(new Array(8).fill(false));
    for (const w of [copied, trained]) disposeNamedWeights(w);
    target.dispose();
  });

  test('random: the first n layers keep the target initialisation and are frozen; no source needed', () => {
    const target = net(2);
    const fresh = namedWeightsOf(target);
    transplant(null, target, { n: 4, mode: 'random' });
    expect(trainable(target)).toEqual([false, false, false, false, true, true, true, true]);
    const after = namedWeightsOf(target);
    expect(sameLayers(after, fresh)).toEqual(new Array(8).fill(true));
    for (const w of [fresh, after]) disposeNamedWeights(w);
    target.dispose();
  });

  test('the same seed gives the same net; with `seed` any target becomes that fresh net', () => {
    const a = net(5);
    const b = net(5);
    transplant(sourceWeights, a, { n: 5, mode: 'frozen' });
    transplant(sourceWeights, b, { n: 5, mode: 'frozen' });
    const [wa, wb] = [namedWeightsOf(a), namedWeightsOf(b)];
    expect(sameLayers(wa, wb)).toEqual(new Array(8).fill(true));

    const reused = net(9);
    transplant(sourceWeights, reused, { n: 5, mode: 'frozen', seed: 5 });
    const wr = namedWeightsOf(reused);
    expect(sameLayers(wr, wa)).toEqual(new Array(8).fill(true));
    for (const w of [wa, wb, wr]) disposeNamedWeights(w);
    for (const m of [a, b, reused]) m.dispose();
  });

  test('refuses n=8 (the classifier) and n outside 0..7', () => {
    const target = net(2);
    expect(() => transplant(sourceWeights, target, { n: 8, mode: 'frozen' })).toThrow(
      /copy the classifier fc8.*0\.\.7/,
    );
    expect(() => transplant(sourceWeights, target, { n: -1, mode: 'frozen' })).toThrow(/integer 0\.\.7, got -1/);
    expect(() => transplant(sourceWeights, target, { n: 1.5, mode: 'fine-tuned' })).toThrow(/got 1\.5/);
    expect(() => transplant(null, target, { n: 1, mode: 'frozen' })).toThrow(/needs a source/);
    // Frozen, the whole net is never a transfer cell, even on its own task.
    expect(() => transplant(sourceWeights, target, { n: 8, mode: 'frozen', sameTask: true })).toThrow(/0\.\.7/);
    target.dispose();
  });

  test('the equal-budget control: on its own task, all 8 layers (fc8 too) are copied and all train', () => {
    const target = net(2);
    transplant(sourceWeights, target, { n: 8, mode: 'fine-tuned', sameTask: true });
    const copied = namedWeightsOf(target);
    expect(sameLayers(sourceWeights, copied)).toEqual(LEARNED_LAYERS.map(() => true));
    expect(trainable(target)).toEqual(LEARNED_LAYERS.map(() => true));
    disposeNamedWeights(copied);
    target.dispose();
  });

  test('a shape mismatch names the layer, the tensor and both shapes, and leaves the target untouched', () => {
    const narrow = net(2, 0.125);
    const before = namedWeightsOf(narrow);
    expect(() => transplant(sourceWeights, narrow, { n: 2, mode: 'frozen' })).toThrow(
      'transplant: conv1/kernel does not fit: source float32[5,5,1,8], target float32[5,5,1,4]',
    );
    const after = namedWeightsOf(narrow);
    expect(sameLayers(after, before)).toEqual(new Array(8).fill(true));
    expect(trainable(narrow)).toEqual(new Array(8).fill(true));

    const missing: NamedWeights = new Map([...sourceWeights].filter(([name]) => name !== 'conv2'));
    const target = net(2);
    expect(() => transplant(missing, target, { n: 2, mode: 'frozen' })).toThrow(
      'transplant: the source has no layer conv2',
    );
    for (const w of [before, after]) disposeNamedWeights(w);
    for (const m of [narrow, target]) m.dispose();
  });
});

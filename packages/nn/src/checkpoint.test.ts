import * as tf from '@tensorflow/tfjs-core';
import type * as tfl from '@tensorflow/tfjs-layers';
import { LocalFolderStore } from '@transferlab/platform';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  type TrainState,
  isTrainCheckpoint,
  CorruptCheckpointError,
  loadCheckpoint,
  loadModel,
  namedWeightsFromCheckpoint,
  saveCheckpoint,
  serializeModel,
  serializeOptimizer,
} from './checkpoint.ts';
import { LocalResponseNormalization, SeededDropout } from './layers.ts';
import { LEARNED_LAYERS, buildNet } from './nets.ts';
import { disposeNamedWeights, namedWeightsOf } from './transplant.ts';
import { useTestBackend } from './test-backend.ts';

const bytes = (tensor: tf.Tensor): Buffer => Buffer.from(new Float32Array(tensor.dataSync()).buffer);
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

const state: TrainState = {
  epoch: 2,
  nextBatch: 3,
  step: 11,
  learningRate: 0.01,
  partialEpoch: { lossSum: 3.25, batches: 3, seconds: 1.5 },
  history: [
    { epoch: 0, loss: 1.3, valTop1: 0.4, learningRate: 0.01, seconds: 2 },
    { epoch: 1, loss: 1.1, valTop1: 0.5, learningRate: 0.01, seconds: 2 },
  ],
  bestValTop1: 0.5,
  bestEpoch: 1,
  trainImages: 176,
  trainSeconds: 3.5,
};

let dir: string;
let store: LocalFolderStore;
let model: tfl.LayersModel;
let optimizer: tf.MomentumOptimizer;

beforeAll(async () => {
  await useTestBackend();
  dir = await mkdtemp(join(tmpdir(), 'transferlab-checkpoint-'));
  store = new LocalFolderStore(dir);
  model = buildNet({ kind: 'small', width: 0.25, lrn: true }, { inputShape: [12, 12, 1], numClasses: 4, seed: 3 });
  model.getLayer('conv1').trainable = false;
  // One momentum step, so the optimizer has slots worth saving.
  optimizer = tf.train.momentum(0.1, 0.9);
  const variables = model.trainableWeights.map((w) => w.read() as tf.Variable);
  optimizer.minimize(() => tf.addN(variables.map((v) => tf.sum(tf.square(v)))) as tf.Scalar, false, variables);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('checkpoint', () => {
  test('round trip: weights, topology, frozen flags, optimizer and state come back bit for bit', async () => {
    const optimizerWeights = await serializeOptimizer(optimizer);
    const manifest = await saveCheckpoint(store, 'cells/a/checkpoint', { model, optimizer: optimizerWeights, state });
    expect(manifest.objects.map((o) => o.role)).toEqual([
      'weights',
      'model',
      'optimizer-weights',
      'optimizer',
      'state',
    ]);
    expect((await store.list('cells/a/checkpoint/')).length).toBe(6);

    const loaded = await loadCheckpoint(store, 'cells/a/checkpoint');
    expect(loaded && isTrainCheckpoint(loaded)).toBe(true);
    const original = await serializeModel(model);
    expect(Buffer.from(loaded!.model.weightData).equals(Buffer.from(original.weightData))).toBe(true);
    expect(loaded!.model.weightSpecs).toEqual(original.weightSpecs);
    expect(loaded!.model.modelTopology).toEqual(original.modelTopology);
    expect(Buffer.from(loaded!.optimizer!.data).equals(Buffer.from(optimizerWeights.data))).toBe(true);
    // Iterations plus one momentum buffer per trainable weight (conv1 is frozen: 14 of 16).
    expect(loaded!.optimizer!.specs).toHaveLength(1 + 14);
    expect(loaded!.state).toEqual(state);

    const restored = await loadModel(store, 'cells/a/checkpoint');
    expect(restored.layers.map((l) => l.getClassName())).toEqual(model.layers.map((l) => l.getClassName()));
    expect(
      restored.layers.filter((l) => l instanceof SeededDropout || l instanceof LocalResponseNormalization),
    ).toHaveLength(4);
    expect(LEARNED_LAYERS.map((name) => restored.getLayer(name).trainable)).toEqual([
      false,
      true,
      true,
      true,
      true,
      true,
      true,
      true,
    ]);
    restored.getWeights().forEach((weight, i) => {
      expect(bytes(weight).equals(bytes(model.getWeights()[i]!))).toBe(true);
    });
    const x = tf.randomUniform([3, 12, 12, 1], 0, 1, 'float32', 1);
    const [a, b] = [model.predict(x) as tf.Tensor, restored.predict(x) as tf.Tensor];
    expect(bytes(a).equals(bytes(b))).toBe(true);

    const fromCheckpoint = namedWeightsFromCheckpoint(loaded!);
    const fromModel = namedWeightsOf(model);
    expect([...fromCheckpoint.keys()]).toEqual([...LEARNED_LAYERS]);
    for (const name of LEARNED_LAYERS) {
      expect(bytes(fromCheckpoint.get(name)!.kernel).equals(bytes(fromModel.get(name)!.kernel))).toBe(true);
    }
    disposeNamedWeights(fromCheckpoint);
    disposeNamedWeights(fromModel);
    tf.dispose([x, a, b]);
    restored.dispose();
  });

  test('a net alone makes a checkpoint without optimizer and state', async () => {
    await saveCheckpoint(store, 'cells/b', { model });
    const loaded = await loadCheckpoint(store, 'cells/b');
    expect(loaded?.optimizer).toBeUndefined();
    expect(loaded?.state).toBeUndefined();
    expect(isTrainCheckpoint(loaded!)).toBe(false);
  });

  test('overwriting swaps in the new objects and removes the old ones', async () => {
    const optimizerWeights = await serializeOptimizer(optimizer);
    await saveCheckpoint(store, 'cells/c', { model, optimizer: optimizerWeights, state });
    const first = await store.list('cells/c/');
    await saveCheckpoint(store, 'cells/c', { model, optimizer: optimizerWeights, state: { ...state, step: 12 } });
    const second = await store.list('cells/c/');
    expect(second).toHaveLength(6);
    // Only the state changed: the other objects keep their content-derived names.
    expect(second.filter((key) => !first.includes(key))).toEqual([
      expect.stringMatching(/^cells\/c\/state-[0-9a-f]{16}\.json$/),
    ]);
    expect((await loadCheckpoint(store, 'cells/c'))?.state?.step).toBe(12);
  });

  test('a corrupted byte is refused, naming the object and both hashes', async () => {
    await saveCheckpoint(store, 'cells/d', { model });
    const key = (await store.list('cells/d/')).find((k) => /weights-.*\.bin$/.test(k))!;
    const path = join(dir, ...key.split('/'));
    const data = await readFile(path);
    const expected = sha256(data);
    data[100] = (data[100]! + 1) % 256;
    await writeFile(path, data);
    await expect(loadCheckpoint(store, 'cells/d')).rejects.toThrow(
      `checkpoint object ${store.describe(key)} is corrupt: its sha256 is ${sha256(data)}, the manifest records ${expected}`,
    );
  });

  test('with keepPrevious, a corrupt latest checkpoint falls back to the previous one, never loaded itself', async () => {
    const optimizerWeights = await serializeOptimizer(optimizer);
    const save = (step: number) =>
      saveCheckpoint(
        store,
        'cells/f',
        { model, optimizer: optimizerWeights, state: { ...state, step } },
        {
          keepPrevious: true,
        },
      );
    await save(1);
    await save(2);
    await save(3);
    // Two checkpoints: 4 shared objects, one state each, and both manifests.
    expect(await store.list('cells/f/')).toHaveLength(4 + 2 + 2);
    expect((await loadCheckpoint(store, 'cells/f'))?.state?.step).toBe(3);

    const latest = JSON.parse(await readFile(join(dir, 'cells', 'f', 'manifest.json'), 'utf8')) as {
      objects: Array<{ role: string; key: string }>;
    };
    const statePath = join(dir, 'cells', 'f', latest.objects.find((o) => o.role === 'state')!.key);
    const data = await readFile(statePath);
    data[5] = data[5]! ^ 1;
    await writeFile(statePath, data);
    await expect(loadCheckpoint(store, 'cells/f')).rejects.toThrow(CorruptCheckpointError);
    const rejected: string[] = [];
    const loaded = await loadCheckpoint(store, 'cells/f', { onRejected: (error) => rejected.push(error.message) });
    expect(loaded?.state?.step).toBe(2);
    expect(rejected).toEqual([expect.stringMatching(/state-[0-9a-f]{16}\.json is corrupt: its sha256 is/)]);

    // Both damaged: a loud error naming both, not a fresh start.
    const previous = JSON.parse(await readFile(join(dir, 'cells', 'f', 'manifest.previous.json'), 'utf8')) as {
      objects: Array<{ role: string; key: string }>;
    };
    const weightsPath = join(dir, 'cells', 'f', previous.objects.find((o) => o.role === 'weights')!.key);
    const weights = await readFile(weightsPath);
    weights[7] = weights[7]! ^ 1;
    await writeFile(weightsPath, weights);
    await expect(loadCheckpoint(store, 'cells/f', { onRejected: () => undefined })).rejects.toThrow(
      /is corrupt: .*; the previous checkpoint too: .*weights-[0-9a-f]{16}\.bin is corrupt/,
    );
  });

  test('a truncated manifest is refused; a missing one means no checkpoint', async () => {
    await saveCheckpoint(store, 'cells/e', { model });
    const path = join(dir, 'cells', 'e', 'manifest.json');
    const text = await readFile(path);
    await writeFile(path, text.subarray(0, Math.floor(text.length / 2)));
    await expect(loadCheckpoint(store, 'cells/e')).rejects.toThrow(
      /manifest .*manifest\.json is unreadable \(truncated or corrupt\)/,
    );

    expect(await loadCheckpoint(store, 'cells/none')).toBeUndefined();
    await expect(loadModel(store, 'cells/none')).rejects.toThrow(/no checkpoint at .*cells\/none\/manifest\.json/);
  });
});

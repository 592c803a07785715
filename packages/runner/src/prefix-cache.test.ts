// Frozen-prefix caching through the cell steps: a frozen cell trained from its cached prefix
// outputs ends with the weights it gets when trained from images, without augmentation and
// with fixed views. Runs on the backend TRANSFERLAB_BACKEND names (scripts/test.sh: tensorflow,
// then wasm), else the automatic choice.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Cell, type SweepSpecInput, expandGrid, prefixCacheRule, validateSpec } from '@transferlab/experiment';
import { loadModel } from '@transferlab/nn';
import { LocalFolderStore } from '@transferlab/platform';
import * as tf from '@tensorflow/tfjs-core';
import { epochViews, fixedViews, planPrefixCache, prefixCacheBudget } from './cell-data.ts';
import { cellKeys } from './cell-store.ts';
import { trainedResult } from './evaluate-cell.ts';
import { ensureSplits } from './prepare-split.ts';
import { trainCell } from './train-cell.ts';
import { initialNet, transplantCell } from './transplant-cell.ts';

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-prefix-cache-'));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function spec(augment: NonNullable<SweepSpecInput['training']>['augment'], maxEpochs = 2) {
  return validateSpec({
    name: 'prefix-cache',
    dataset: { kind: 'mnist' },
    // 13 images per class, 5 classes per half: 65 in batches of 16, so every epoch ends on a
    // batch of one image that trains from pixels.
    split: { kind: 'random', trainPerClass: 13, valPerClass: 3, testPerClass: 2 },
    net: { kind: 'small', width: 0.25 },
    training: { batchSize: 16, maxEpochs, learningRate: 0.02, schedule: { stepEpochs: 1, gamma: 0.5 }, augment },
    layers: [2],
    arms: ['baseB', 'BnB'],
    repeats: 1,
  });
}

async function weightsHash(store: LocalFolderStore, cellId: string): Promise<string> {
  const model = await loadModel(store, cellKeys.final(cellId));
  const hash = createHash('sha256');
  for (const weight of model.getWeights()) hash.update(new Uint8Array(new Float32Array(weight.dataSync()).buffer));
  model.dispose();
  tf.disposeVariables();
  return hash.digest('hex');
}

/** Trains BnB n=2 from images (budget 0) and again from its cache; returns both outcomes and hashes. */
async function bothWays(name: string, augment: Parameters<typeof spec>[0], maxEpochs?: number) {
  const store = new LocalFolderStore(join(work, name));
  const plan = expandGrid(spec(augment, maxEpochs));
  await ensureSplits(store, plan.splits, { specDir: work });
  const base = plan.cells.find((cell) => cell.arm === 'baseB')!;
  const frozen = plan.cells.find((cell) => cell.arm === 'BnB')!;
  await trainCell(store, base);
  await transplantCell(store, frozen);
  const uncached = await trainCell(store, frozen, { prefixCacheBytes: 0 });
  const uncachedHash = await weightsHash(store, frozen.id);
  for (const key of await store.list(`${cellKeys.prefix(frozen.id)}/`)) {
    if (!key.includes('/initial/') && !key.endsWith('/cell.json')) await store.delete(key);
  }
  const cached = await trainCell(store, frozen, { prefixCacheBytes: 2 ** 30 });
  const cachedHash = await weightsHash(store, frozen.id);
  return { frozen, uncached: uncached!, cached: cached!, uncachedHash, cachedHash, store };
}

describe('frozen-prefix caching in trainCell', () => {
  it('without augmentation: an exact cache, the same weights and history as training from images', async () => {
    const run = await bothWays('exact', false);
    expect(run.cachedHash, `backend ${run.cached.backend}`).toBe(run.uncachedHash);
    expect(run.uncached.prefixCache).toMatchObject({ mode: 'uncached', reason: expect.stringMatching(/budget/) });
    expect(run.cached.prefixCache).toMatchObject({ mode: 'exact', layer: 'pool2' });
    expect(run.cached.history.map((h) => [h.loss, h.valTop1])).toEqual(
      run.uncached.history.map((h) => [h.loss, h.valTop1]),
    );
    // The report's column comes from the training outcome.
    expect(trainedResult(run.frozen, run.cached).prefixCache).toEqual({
      mode: 'exact',
      layer: 'pool2',
      bytes: run.cached.prefixCache!.bytes,
    });
  }, 120_000);

  it('with fixed views: cached views, the same weights as drawing the same views from images', async () => {
    // More epochs than its 10 views, or the cache would not pay for itself.
    const run = await bothWays('views', { crop: 2, mirror: true, views: 'fixed' }, 11);
    expect(run.cached.prefixCache).toMatchObject({ mode: 'views', layer: 'pool2' });
    expect(run.cachedHash, `backend ${run.cached.backend}`).toBe(run.uncachedHash);
  }, 120_000);

  it('leaves random augmentation, unfrozen nets and caches over the budget uncached', async () => {
    const store = new LocalFolderStore(join(work, 'exact'));
    const cells = expandGrid(spec(false)).cells;
    const frozen = cells.find((cell) => cell.arm === 'BnB')!;
    const base = cells.find((cell) => cell.arm === 'baseB')!;
    const counts = { train: 65, val: 15 };
    const frozenNet = await initialNet(store, frozen);
    const baseNet = await initialNet(store, base);
    try {
      expect(planPrefixCache(baseNet, base, counts, 2 ** 30).use).toEqual({
        mode: 'uncached',
        reason: 'no frozen layers to cache',
      });
      const random: Pick<Cell, 'training' | 'mode' | 'n'> = {
        ...frozen,
        training: { ...frozen.training, augment: { crop: 2, mirror: true } },
      };
      expect(planPrefixCache(frozenNet, random, counts, 2 ** 30).use.reason).toMatch(/random augmentation/);
      const exact = planPrefixCache(frozenNet, frozen, counts, 2 ** 30);
      // pool2 of the small net at width 0.25 on 28x28: 7x7x16 floats per image.
      expect(exact.use).toEqual({ mode: 'exact', layer: 'pool2', bytes: (65 + 15) * 7 * 7 * 16 * 4 });
      expect(planPrefixCache(frozenNet, frozen, counts, exact.use.bytes! - 1).use.mode).toBe('uncached');
      const fixed: Pick<Cell, 'training' | 'mode' | 'n'> = {
        ...frozen,
        training: { ...frozen.training, augment: { crop: 2, mirror: true, views: 'fixed' } },
      };
      expect(planPrefixCache(frozenNet, fixed, counts, 2 ** 30).use).toEqual({
        mode: 'uncached',
        reason: '10 prefix pass(es) per image to build the cache, 2 epoch(s) to train',
      });
      fixed.training.maxEpochs = 11;
      const views = planPrefixCache(frozenNet, fixed, counts, 2 ** 30);
      expect(views.use.mode).toBe('views');
      expect(views.use.bytes).toBe((65 * 10 + 15) * 7 * 7 * 16 * 4);
    } finally {
      frozenNet.dispose();
      baseNet.dispose();
      tf.disposeVariables();
    }
  }, 60_000);

  it('counts as many fixed views as the forecast assumes (experiment/cost.ts prefixCacheRule)', () => {
    for (const augment of [
      { crop: 4, mirror: true, views: 'fixed' as const },
      { crop: 4, mirror: false, views: 'fixed' as const },
      { crop: 0, mirror: true, views: 'fixed' as const },
      false as const,
    ]) {
      const frozen = expandGrid(spec(augment, 50)).cells.find((cell) => cell.arm === 'BnB')!;
      expect(prefixCacheRule(frozen), JSON.stringify(augment)).toEqual({
        views: fixedViews(frozen.training.augment).length,
      });
    }
  });

  it('draws views as the paper cropped them, per epoch from the order stream', () => {
    const views = fixedViews({ crop: 4, mirror: true });
    expect(views).toHaveLength(10);
    expect(views.filter((view) => view.mirror)).toHaveLength(5);
    expect(views.slice(0, 5).map((view) => [view.offsetY, view.offsetX])).toEqual([
      [0, 0],
      [0, 8],
      [8, 0],
      [8, 8],
      [4, 4],
    ]);
    expect(fixedViews({ crop: 0, mirror: false })).toHaveLength(1);
    const epoch0 = epochViews(1000, 5, 0, 10);
    expect(epochViews(1000, 5, 0, 10)).toEqual(epoch0);
    expect(epochViews(1000, 5, 1, 10)).not.toEqual(epoch0);
    expect(new Set(epoch0).size).toBe(10);
  });

  it('reads its budget from TRANSFERLAB_PREFIX_CACHE_BYTES, 1 GiB by default, and refuses nonsense', () => {
    expect(prefixCacheBudget({})).toBe(2 ** 30);
    expect(prefixCacheBudget({ TRANSFERLAB_PREFIX_CACHE_BYTES: '0' })).toBe(0);
    expect(() => prefixCacheBudget({ TRANSFERLAB_PREFIX_CACHE_BYTES: '1GiB' })).toThrow(
      /TRANSFERLAB_PREFIX_CACHE_BYTES/,
    );
  });
});

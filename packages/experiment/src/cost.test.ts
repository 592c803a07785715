import { describe, expect, it } from 'vitest';
import {
  type Throughput,
  cellCost,
  halfSizesOf,
  prefixCacheRule,
  scheduleWall,
  sweepCost,
  trainSecondsPerImage,
} from './cost.ts';
import { expandGrid } from './grid.ts';
import { validateSpec } from './spec.ts';

// Injected figures: 100 img/s a full step, of which the pipeline is 1/1000 s and the forward
// pass 1/400 s an image; layers' FLOPs shares 0.5, 0.2, 0.1, ... so freezing conv1 halves the backward part.
const throughput: Throughput = {
  trainImagesPerSecond: 100,
  forwardImagesPerSecond: 400,
  pipelineImagesPerSecond: 1000,
  evalImagesPerSecond: 1000,
  layerFlopShare: [0.5, 0.2, 0.1, 0.1, 0.05, 0.03, 0.015, 0.005],
  netSeconds: 1,
  checkpointSeconds: 0.5,
};

const spec = validateSpec({
  name: 'costed',
  dataset: { kind: 'mnist' },
  split: { trainPerClass: 100, valPerClass: 10, testPerClass: 20 },
  net: { kind: 'small', width: 0.25 },
  training: { maxEpochs: 2 },
  layers: [1, 2],
  arms: ['baseA', 'baseB', 'BnB', 'AnB+'],
  repeats: 1,
});
const plan = expandGrid(spec);
const sizes = halfSizesOf({ classes: 10, trainPerClass: 6000, testPerClass: 1000 }, spec.split);
const byName = (name: string) => plan.cells.find((cell) => cell.name === name)!;

describe('cost forecast', () => {
  it('carves a half as prepare-split does: 5 classes, caps per class', () => {
    expect(sizes.B).toEqual({ train: 500, val: 50, test: 100 });
    expect(halfSizesOf({ classes: 10, trainPerClass: 60, testPerClass: 1000 }, { valPerClass: 10 }).A.train).toBe(250);
  });

  it('costs a frozen step as pipeline + forward + the trainable layers share of the backward part', () => {
    expect(trainSecondsPerImage(throughput, 0)).toBeCloseTo(0.01, 12);
    // backward = 0.01 - 0.001 - 0.0025 = 0.0065; conv1 frozen leaves half of it.
    expect(trainSecondsPerImage(throughput, 1)).toBeCloseTo(0.001 + 0.0025 + 0.0065 * 0.5, 12);
    expect(trainSecondsPerImage(throughput, 7)).toBeLessThan(trainSecondsPerImage(throughput, 2));
  });

  it('adds a validation pass per epoch, the test pass and the fixed costs to the training time', () => {
    const base = cellCost(byName('baseB seed=1'), sizes.B, throughput);
    expect(base.trainSeconds).toBeCloseTo(2 * 500 * 0.01, 9);
    expect(base.evalSeconds).toBeCloseTo((2 * 50 + 100) / 1000, 9);
    expect(base.fixedSeconds).toBeCloseTo(3 * 1 + 2 * 0.5, 9);
    const frozen = cellCost(byName('BnB n=1 seed=1'), sizes.B, throughput);
    const tuned = cellCost(byName('AnB+ n=1 seed=1'), sizes.B, throughput);
    expect(frozen.frozen).toBe(1);
    expect(tuned.frozen).toBe(0);
    expect(frozen.seconds).toBeLessThan(tuned.seconds);
  });

  it('costs a frozen cell that trains from its cached prefix: the prefix once per view, then only the layers above', () => {
    const unaugmented = expandGrid({ ...spec, training: { ...spec.training, augment: false } });
    const frozen = unaugmented.cells.find((cell) => cell.name === 'BnB n=1 seed=1')!;
    expect(prefixCacheRule(frozen)).toEqual({ views: 1 });
    const cost = cellCost(frozen, sizes.B, throughput);
    // conv1 is half the FLOPs: the build runs half a forward pass over 500 train and 50 val
    // images; each of 2 epochs runs the other half forward and backward over 500 images.
    expect(cost.trainSeconds).toBeCloseTo(550 * 0.0025 * 0.5 + 2 * 500 * (0.0025 + 0.0065) * 0.5, 9);
    expect(cost.evalSeconds).toBeCloseTo((2 * 50 * 0.5 + 100) / 1000, 9);
    // Random augmentation (the spec's default) trains from images; so does a cell with no more
    // epochs than views, and one with nothing frozen.
    expect(prefixCacheRule(byName('BnB n=1 seed=1'))).toEqual({ reason: expect.stringMatching(/random augmentation/) });
    expect(prefixCacheRule({ ...frozen, training: { ...frozen.training, maxEpochs: 1 } })).toEqual({
      reason: '1 prefix pass(es) per image to build the cache, 1 epoch(s) to train',
    });
    expect(prefixCacheRule(byName('AnB+ n=1 seed=1'))).toEqual({ reason: 'no frozen layers to cache' });
  });

  it('schedules by dependencies within the concurrency, with reused cells free', () => {
    const costs = sweepCost({
      cells: plan.cells,
      sizes: new Map([[plan.splits[0]!.id, sizes]]),
      throughput,
      concurrency: 1,
      splitSeconds: 5,
    });
    // One slot: the wall time is every cell back to back, after the splits.
    expect(costs.wallSeconds).toBeCloseTo(costs.computeSeconds, 6);
    const wide = sweepCost({
      cells: plan.cells,
      sizes: new Map([[plan.splits[0]!.id, sizes]]),
      throughput,
      concurrency: 100,
      splitSeconds: 5,
    });
    // Unbounded: the bases in parallel, then the transfer cells in parallel.
    const base = wide.cells.find((c) => c.cell.kind === 'base')!.seconds;
    const longest = Math.max(...wide.cells.filter((c) => c.cell.kind !== 'base').map((c) => c.seconds));
    expect(wide.wallSeconds).toBeCloseTo(5 + base + longest, 6);
    const reused = new Set(plan.cells.filter((cell) => cell.kind === 'base').map((cell) => cell.id));
    const resumed = sweepCost({
      cells: plan.cells,
      sizes: new Map([[plan.splits[0]!.id, sizes]]),
      throughput,
      concurrency: 100,
      reused,
    });
    expect(resumed.wallSeconds).toBeCloseTo(longest, 6);
    expect(resumed.cells.filter((c) => c.reused).every((c) => c.seconds === 0)).toBe(true);
  });

  it('refuses a concurrency below one', () => {
    expect(() => scheduleWall([], 0)).toThrow(/concurrency/);
  });
});

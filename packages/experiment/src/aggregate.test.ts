import { describe, expect, it } from 'vitest';
import { aggregate } from './aggregate.ts';
import type { SweepPlan } from './cells.ts';
import { expandGrid } from './grid.ts';
import { validateSpec } from './spec.ts';
import { syntheticResults } from './test-fixtures.ts';

function twoSeedPlan(): SweepPlan {
  return expandGrid(
    validateSpec({
      name: 'agg',
      dataset: { kind: 'mnist' },
      arms: ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'AnA', 'BnA', 'BnA+'],
      layers: [1, 3],
      repeats: 2,
      base: { maxEpochs: 30 },
    }),
  );
}

// Hand-picked so every difference is easy to check: seed 2 is seed 1 plus 0.02 except where noted.
const SCORES: Record<string, number> = {
  'baseB seed=1': 0.6,
  'baseB seed=2': 0.62,
  'BnB n=1 seed=1': 0.59,
  'BnB n=1 seed=2': 0.61,
  'BnB n=3 seed=1': 0.55,
  'BnB n=3 seed=2': 0.59,
  'AnB n=1 seed=1': 0.58,
  'AnB n=1 seed=2': 0.6,
  'AnB n=3 seed=1': 0.5,
  'AnB n=3 seed=2': 0.52,
  'AnB+ n=1 seed=1': 0.61,
  'AnB+ n=1 seed=2': 0.64,
  'AnB+ n=3 seed=1': 0.62,
  'AnB+ n=3 seed=2': 0.64,
  'BnB+ n=1 seed=1': 0.6,
  'BnB+ n=1 seed=2': 0.62,
  'BnB+ n=3 seed=1': 0.6,
  'BnB+ n=3 seed=2': 0.62,
  'baseA seed=1': 0.7,
  'baseA seed=2': 0.7,
  'AnA n=1 seed=1': 0.69,
  'AnA n=1 seed=2': 0.69,
  'AnA n=3 seed=1': 0.68,
  'AnA n=3 seed=2': 0.68,
  'BnA n=1 seed=1': 0.66,
  'BnA n=1 seed=2': 0.66,
  'BnA n=3 seed=1': 0.6,
  'BnA n=3 seed=2': 0.6,
  'BnA+ n=1 seed=1': 0.71,
  'BnA+ n=1 seed=2': 0.71,
  'BnA+ n=3 seed=1': 0.71,
  'BnA+ n=3 seed=2': 0.72,
};
const score = (cell: { name: string }): number => SCORES[cell.name]!;
const T1 = 12.706204736; // t(0.975, 1)

describe('aggregate', () => {
  it('summarises each arm and n over seeds', () => {
    const agg = aggregate(twoSeedPlan(), syntheticResults(twoSeedPlan(), { score }));
    expect(agg.targets).toEqual(['B', 'A']);
    expect(agg.layers).toEqual([1, 3]);
    const bnb3 = agg.points.find((p) => p.arm === 'BnB' && p.n === 3)!;
    expect(bnb3.values).toEqual([0.55, 0.59]);
    expect(bnb3.seeds).toEqual([1, 2]);
    expect(bnb3.mean).toBeCloseTo(0.57, 12);
    // sd of [0.55, 0.59] = 0.02 * sqrt(2); half-width = t * sd / sqrt(2) = t * 0.02
    expect(bnb3.ci95).toBeCloseTo(T1 * 0.02, 9);
    const baseB = agg.bases.find((b) => b.arm === 'baseB')!;
    expect(baseB).toMatchObject({ target: 'B', count: 2, values: [0.6, 0.62], implicit: false });
    expect(baseB.mean).toBeCloseTo(0.61, 12);
  });

  it('splits the drop into co-adaptation and specificity, paired by seed', () => {
    const agg = aggregate(twoSeedPlan(), syntheticResults(twoSeedPlan(), { score }));
    const b3 = agg.decomposition.find((row) => row.target === 'B' && row.n === 3)!;
    expect(b3.arms).toEqual({ base: 'baseB', selffer: 'BnB', transfer: 'AnB', transferFineTuned: 'AnB+' });
    // co-adaptation = baseB - BnB: seed 1 0.05, seed 2 0.03
    expect(b3.coAdaptation!.values[0]).toBeCloseTo(0.05, 12);
    expect(b3.coAdaptation!.values[1]).toBeCloseTo(0.03, 12);
    expect(b3.coAdaptation!.mean).toBeCloseTo(0.04, 12);
    expect(b3.coAdaptation!.ci95).toBeCloseTo(T1 * 0.01, 9);
    // specificity = BnB - AnB: 0.05, 0.07
    expect(b3.specificity!.mean).toBeCloseTo(0.06, 12);
    // boost = AnB+ - baseB: 0.02, 0.02 -> no spread
    expect(b3.boost!.mean).toBeCloseTo(0.02, 12);
    expect(b3.boost!.ci95).toBeCloseTo(0, 12);

    // the reverse direction, target A: baseA, AnA, BnA, BnA+
    const a3 = agg.decomposition.find((row) => row.target === 'A' && row.n === 3)!;
    expect(a3.arms).toEqual({ base: 'baseA', selffer: 'AnA', transfer: 'BnA', transferFineTuned: 'BnA+' });
    expect(a3.coAdaptation!.mean).toBeCloseTo(0.02, 12);
    expect(a3.specificity!.mean).toBeCloseTo(0.08, 12);
    expect(a3.boost!.mean).toBeCloseTo(0.015, 12);
  });

  it('pairs only seeds present on both sides', () => {
    const p = twoSeedPlan();
    const results = syntheticResults(p, { score, skip: (cell) => cell.name === 'BnB n=3 seed=2' });
    const b3 = aggregate(p, results).decomposition.find((row) => row.target === 'B' && row.n === 3)!;
    expect(b3.coAdaptation).toMatchObject({ seeds: [1], count: 1, ci95: null });
    expect(b3.coAdaptation!.mean).toBeCloseTo(0.05, 12);
  });

  it('says when base and transfer cells train on different schedules, and about missing cells', () => {
    const p = twoSeedPlan();
    const results = syntheticResults(p, { score, skip: (cell) => cell.name === 'AnB n=1 seed=2' });
    const { warnings, cells, summary } = aggregate(p, results);
    expect(warnings[0]).toMatch(/^base cells train 30 epochs .* but transfer cells 10 /);
    expect(warnings.some((w) => w.startsWith('1 of 32 cells have no result yet: AnB n=1 seed=2'))).toBe(true);
    expect(cells.find((row) => row.name === 'AnB n=1 seed=2')!.status).toBe('missing');
    expect(summary).toMatchObject({ cells: 32, finished: 31, missing: 1, seeds: [1, 2], seconds: 31 * 60 });
    expect(summary.backends).toEqual([{ backend: 'wasm', cells: 31, seconds: 31 * 60, imagesPerSecond: 96 }]);
  });

  it('warns about base nets still rising, stopped before their last rate step, or of unequal length', () => {
    const p = expandGrid(
      validateSpec({
        name: 'w',
        dataset: { kind: 'mnist' },
        arms: ['baseA', 'baseB', 'AnB'],
        layers: [1],
        repeats: 3,
        training: { maxEpochs: 10, schedule: { stepEpochs: 4, gamma: 0.1 } },
      }),
    );
    const flat = [0.5, 0.6, 0.62, 0.63, 0.7, 0.72, 0.71, 0.72, 0.72, 0.71];
    const rising = [0.5, 0.6, 0.62, 0.63, 0.7, 0.71, 0.73, 0.75, 0.77, 0.79];
    const results = syntheticResults(p, {
      score,
      history: (cell) =>
        cell.name === 'baseA seed=1' ? rising : cell.name === 'baseB seed=2' ? rising.slice(2, 9) : flat,
      epochs: (cell) => (cell.name === 'baseB seed=2' ? 7 : 10),
    });
    const { warnings } = aggregate(p, results);
    expect(warnings).toHaveLength(4);
    expect(warnings[0]).toMatch(
      /^baseA seed=1 was still improving at its last epoch \(10\/10\): validation top-1 rose by 2\.00 points per epoch over its last 5 epochs/,
    );
    expect(warnings[1]).toMatch(
      /^baseB seed=2 stopped \(max-epochs\) at epoch 7, before its last learning-rate step at epoch 9/,
    );
    expect(warnings[2]).toMatch(/^baseB seed=2 was still improving at its last epoch \(7\/10\)/);
    expect(warnings[3]).toBe(
      'baseA seed=2 trained 10 epochs and baseB seed=2 7: transfer from one is compared with a net trained for another length',
    );
    // A flat end is a plateau, whatever the budget: no warning for the others.
    expect(warnings.join('\n')).not.toMatch(/seed=3/);
  });

  it('warns when a selffer clearly beats its base net', () => {
    const p = twoSeedPlan();
    const inflated = (cell: { name: string }): number =>
      cell.name.startsWith('BnB n=1') ? score(cell) + 0.05 : score(cell);
    const { warnings } = aggregate(p, syntheticResults(p, { score: inflated }));
    expect(warnings.some((w) => w.startsWith('BnB n=1 (') && w.includes('beats baseB'))).toBe(true);
  });

  it('warns when the equal-budget control clearly beats its base net, and not when it does not', () => {
    const p = expandGrid(
      validateSpec({ name: 'ctl', dataset: { kind: 'mnist' }, arms: ['baseB', 'controlB'], repeats: 3 }),
    );
    // The CIFAR-10 run's figures: controlB - baseB of +8.0, +5.9 and +10.7 points.
    const base: Record<number, number> = { 1: 0.5748, 2: 0.6098, 3: 0.5682 };
    const gain: Record<number, number> = { 1: 0.0798, 2: 0.0594, 3: 0.1072 };
    const lifted = (cell: { arm: string; seed: number }): number =>
      base[cell.seed]! + (cell.arm === 'controlB' ? gain[cell.seed]! : 0);
    const warned = aggregate(p, syntheticResults(p, { score: lifted })).warnings.filter((w) =>
      w.startsWith('controlB'),
    );
    expect(warned).toEqual([
      'controlB (baseB trained a second budget) is +8.2 points above baseB (test top-1, 95% CI +2.3 to +14.2, ' +
        '3 repeats): baseB is short of what its net reaches, so comparisons against baseB count extra training ' +
        'as transfer; read the arms against controlB',
    ]);
    // A gain whose interval reaches 0 (+1.5, -0.5, +2.0 points) is noise: no warning.
    const noisy: Record<number, number> = { 1: 0.015, 2: -0.005, 3: 0.02 };
    const flat = (cell: { arm: string; seed: number }): number =>
      base[cell.seed]! + (cell.arm === 'controlB' ? noisy[cell.seed]! : 0);
    expect(aggregate(p, syntheticResults(p, { score: flat })).warnings.some((w) => w.startsWith('controlB'))).toBe(
      false,
    );
  });

  it('rescores from the validation history with the sweep k', () => {
    const p = expandGrid(
      validateSpec({ name: 'k', dataset: { kind: 'mnist' }, arms: ['baseB'], repeats: 2, training: { scoreTopK: 2 } }),
    );
    const [result] = syntheticResults(p, { score: () => 0.99 });
    const agg = aggregate(p, [{ ...result!, valTop1History: [0.1, 0.5, 0.3, 0.4] }]);
    // The primary score is test top-1; the paper's validation score is kept beside it.
    expect(agg.bases[0]!.mean).toBeCloseTo(0.99, 12);
    expect(agg.cells[0]!.valScore).toBeCloseTo(0.45, 12);
    expect(agg.warnings).toContain('2 repeats: every finding is inconclusive below 3 (set repeats to 3 or more)');
  });

  it('ignores results of other sweeps, and says so', () => {
    const p = twoSeedPlan();
    const stray = { ...syntheticResults(p, { score })[0]!, cellId: 'not-a-cell' };
    expect(aggregate(p, [stray]).warnings).toContain('1 results belong to no cell of this sweep and were ignored');
  });
});

import { describe, expect, it } from 'vitest';
import { aggregate } from './aggregate.ts';
import type { Cell } from './cells.ts';
import { compare, findings, table1 } from './findings.ts';
import type { Finding } from './findings.ts';
import { expandGrid } from './grid.ts';
import { validateSpec } from './spec.ts';
import { syntheticResults } from './test-fixtures.ts';

const ARMS = ['baseA', 'baseB', 'BnB', 'BnB+', 'AnB', 'AnB+', 'RnB', 'controlB'] as const;

function planOf(repeats: number, split: 'random' | 'groups' = 'random') {
  return expandGrid(
    validateSpec({
      name: 'f',
      dataset: { kind: 'mnist' },
      arms: [...ARMS],
      repeats,
      ...(split === 'groups' ? { split: { kind: 'groups', groups: { A: [0, 1, 2, 3, 4], B: [5, 6, 7, 8, 9] } } } : {}),
    }),
  );
}

/** Scores shaped like the paper's, with a per-seed offset shared by every arm (as a split is). */
function paperShape(effect = 1, seedSpread = 0.01) {
  return (cell: Cell): number => {
    const n = cell.n ?? 0;
    const offset = (cell.seed - 2) * seedSpread;
    const wiggle = ((cell.seed * 13 + n * 7) % 3) * 0.001;
    const base = 0.7 + offset + wiggle;
    switch (cell.arm) {
      case 'BnB':
        return base - effect * (n >= 3 && n <= 5 ? 0.03 : 0.005);
      case 'AnB':
        return base - effect * (0.005 + 0.01 * n);
      case 'BnB+':
        return base + 0.004;
      case 'controlB':
        return base + 0.005;
      case 'AnB+':
        return base + 0.005 + effect * 0.015;
      case 'RnB':
        return base - effect * 0.08;
      default:
        return base;
    }
  };
}

function verdictsOf(list: Finding[]): Record<string, string> {
  return Object.fromEntries(list.map((f) => [f.id, f.verdict]));
}

describe('findings', () => {
  it('replicates each finding when every repeat shows it', () => {
    const plan = planOf(3);
    const agg = aggregate(plan, syntheticResults(plan, { score: paperShape() }));
    expect(verdictsOf(findings(agg))).toEqual({
      specificity: 'replicates',
      'co-adaptation': 'replicates',
      'fine-tuning-recovers': 'replicates',
      'transfer-boost': 'replicates',
      'random-filters': 'replicates',
      'dissimilar-split': 'not measured',
    });
  });

  it('gives no verdict below three repeats, however clear the effect', () => {
    const plan = planOf(2);
    const list = findings(aggregate(plan, syntheticResults(plan, { score: paperShape(3) })));
    for (const f of list.filter((f) => f.id !== 'dissimilar-split')) {
      expect(f.verdict).toBe('inconclusive');
      expect(f.reason).toMatch(/^2 repeat\(s\): a verdict needs at least 3/);
    }
  });

  it('says "does not replicate" when the effect is reversed, and "inconclusive" when it drowns in noise', () => {
    const plan = planOf(3);
    const reversed = findings(aggregate(plan, syntheticResults(plan, { score: paperShape(-1) })));
    expect(verdictsOf(reversed)).toMatchObject({
      specificity: 'does not replicate',
      'co-adaptation': 'does not replicate',
      'transfer-boost': 'does not replicate',
      'random-filters': 'does not replicate',
    });

    // No effect on average, but the repeats disagree: each interval spans zero.
    const disagree = [0, 0.04, -0.04, 0];
    const noisy = (cell: Cell): number => {
      const shift = ['AnB', 'AnB+', 'BnB'].includes(cell.arm) ? disagree[cell.seed]! : 0;
      return paperShape(0)(cell) + shift;
    };
    const list = findings(aggregate(plan, syntheticResults(plan, { score: noisy })));
    expect(verdictsOf(list)).toMatchObject({
      specificity: 'inconclusive',
      'co-adaptation': 'inconclusive',
      'transfer-boost': 'inconclusive',
    });
  });

  it("pairs by seed and averages over n, as the paper's Table 1", () => {
    const plan = planOf(3);
    const agg = aggregate(plan, syntheticResults(plan, { score: paperShape() }));
    const rows = table1(agg, 'B');
    expect(rows.map((c) => c.label)).toEqual([
      'AnB+ − baseB',
      'AnB+ − BnB+',
      'AnB+ − controlB',
      'BnB+ − controlB',
      'controlB − baseB',
    ]);
    // AnB+ − baseB = 0.005 + 0.015 at every n and seed, give or take the wiggle.
    expect(rows[0]!.summary!.mean).toBeCloseTo(0.02, 2);
    expect(rows[0]!.summary!.ci95).toBeLessThan(0.01);
    expect(rows[0]!.summary!.seeds).toEqual([1, 2, 3]);
    expect(rows[4]!.layers).toEqual([]);
    // A missing cell drops its seed from the comparisons that need it.
    const partial = aggregate(
      plan,
      syntheticResults(plan, { score: paperShape(), skip: (cell) => cell.name === 'AnB+ n=4 seed=2' }),
    );
    expect(compare(partial, 'AnB+', 'baseB', 'B', partial.layers).summary!.seeds).toEqual([1, 3]);
  });

  it("compares the dissimilar split's transfer drop with a random split's, unpaired", () => {
    const random = planOf(3);
    const dissimilar = planOf(3, 'groups');
    const randomAgg = aggregate(random, syntheticResults(random, { score: paperShape(1) }));
    const larger = aggregate(dissimilar, syntheticResults(dissimilar, { score: paperShape(2) }));
    const found = findings(larger, { randomSplit: randomAgg }).find((f) => f.id === 'dissimilar-split')!;
    expect(found.verdict).toBe('replicates');
    expect(found.estimates.map((c) => c.id)).toEqual(['baseB-AnB', 'baseB-AnB', 'dissimilar-minus-random']);
    expect(found.estimates[2]!.summary!.mean).toBeCloseTo(0.045, 9);

    const same = aggregate(dissimilar, syntheticResults(dissimilar, { score: paperShape(0.2) }));
    expect(findings(same, { randomSplit: randomAgg }).find((f) => f.id === 'dissimilar-split')!.verdict).toBe(
      'does not replicate',
    );
  });
});

import { describe, expect, it } from 'vitest';
import { splitComparisonProblems } from './protocol.ts';
import { validateSpec } from './spec.ts';

const GROUPS = { kind: 'groups', groups: { A: [0, 1, 2, 3, 4], B: [5, 6, 7, 8, 9] } } as const;

function spec(overrides: Record<string, unknown>) {
  return validateSpec({ name: 's', dataset: { kind: 'mnist' }, ...overrides });
}

describe('splitComparisonProblems', () => {
  it('accepts two sweeps that differ only in the classes of their halves', () => {
    const random = spec({ split: { kind: 'random', trainPerClass: 100 }, repeats: 3 });
    const dissimilar = spec({ split: { ...GROUPS, trainPerClass: 100 }, repeats: 1, name: 'other' });
    expect(splitComparisonProblems(dissimilar, random)).toEqual([]);
  });

  it('names every field that moves accuracy, with both values', () => {
    const random = spec({ training: { maxEpochs: 30, schedule: { stepEpochs: 10, gamma: 0.1 } } });
    const dissimilar = spec({
      split: { ...GROUPS, trainPerClass: 100 },
      training: { maxEpochs: 10, schedule: { stepEpochs: 4, gamma: 0.1 } },
      net: { width: 0.5 },
    });
    expect(splitComparisonProblems(dissimilar, random)).toEqual([
      'split.trainPerClass: 100 here, unset in the random-split sweep',
      'net.width: 0.5 here, 1 in the random-split sweep',
      'training.maxEpochs: 10 here, 30 in the random-split sweep',
      'training.schedule.stepEpochs: 4 here, 10 in the random-split sweep',
    ]);
  });

  it('refuses a pair whose kinds are the wrong way round, or whose random sweep lacks some n', () => {
    const random = spec({ layers: [1, 2] });
    const dissimilar = spec({ split: GROUPS, layers: [1, 2, 3] });
    expect(splitComparisonProblems(random, dissimilar)).toEqual([
      "split.kind: this sweep's is 'random', not a dissimilar ('groups') split",
      "split.kind: the random-split sweep's is 'groups', not 'random'",
    ]);
    expect(splitComparisonProblems(dissimilar, random)).toEqual(['layers: the random-split sweep has no n = 3']);
  });
});

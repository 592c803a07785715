import { describe, expect, it } from 'vitest';
import type { Dataset, ImageShape, Subset } from './dataset.ts';
import { DataError } from './errors.ts';
import { type SplitSpec, SplitError, computeSplitId, parseGroupsYaml, planSplit, selectImages } from './split.ts';

const CIFAR = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const SHAPE: ImageShape = [2, 2, 1];

/** Image i of a subset carries i in its first two bytes, so tests can trace where it went. */
function subset(perClass: number[]): Subset {
  const count = perClass.reduce((a, b) => a + b, 0);
  const labels = new Int32Array(count);
  const pixels = new Uint8Array(count * 4);
  // Interleave classes so that dataset order is not grouped by class.
  let i = 0;
  const left = perClass.slice();
  while (i < count) {
    for (let label = 0; label < left.length; label++) {
      if (left[label]! > 0) {
        left[label]!--;
        labels[i] = label;
        pixels[i * 4] = i & 255;
        pixels[i * 4 + 1] = i >> 8;
        pixels[i * 4 + 2] = label;
        i++;
      }
    }
  }
  return { count, labels, pixels };
}

function dataset(options: { classes?: string[]; train?: number[]; test?: number[] | null } = {}): Dataset {
  const classes = options.classes ?? CIFAR;
  const made: Dataset = {
    name: 'toy',
    classes,
    shape: SHAPE,
    train: subset(options.train ?? classes.map(() => 20)),
    source: 'memory:toy',
  };
  if (options.test !== null) made.test = subset(options.test ?? classes.map(() => 5));
  return made;
}

const random = (seed: number, caps: SplitSpec['caps'] = { valPerClass: 2 }): SplitSpec => ({
  kind: 'random',
  seed,
  caps,
});

function splitError(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SplitError);
    return (error as Error).message;
  }
  throw new Error('expected a SplitError');
}

describe('planSplit, random', () => {
  it('is pinned for seed 1 on the CIFAR-10 classes (a change of PRNG breaks this)', () => {
    const plan = planSplit(CIFAR, random(1));
    expect(plan.halves.A.classes).toEqual(['airplane', 'automobile', 'bird', 'dog', 'truck']);
    expect(plan.halves.B.classes).toEqual(['cat', 'deer', 'frog', 'horse', 'ship']);
    expect(plan.halves.A.sourceLabels).toEqual([0, 1, 2, 5, 9]);
    expect(plan.halves.B.sourceLabels).toEqual([3, 4, 6, 7, 8]);
  });

  it('gives the same halves for the same seed and different halves for different seeds', () => {
    expect(planSplit(CIFAR, random(5)).halves).toEqual(planSplit(CIFAR, random(5)).halves);
    const halves = new Set([1, 2, 3, 4, 5].map((seed) => planSplit(CIFAR, random(seed)).halves.A.classes.join(',')));
    expect(halves.size).toBeGreaterThan(3);
  });

  it('puts floor(k/2) classes in A and the rest in B, covering every class once', () => {
    const classes = CIFAR.slice(0, 7);
    const plan = planSplit(classes, random(3));
    expect(plan.halves.A.classes).toHaveLength(3);
    expect(plan.halves.B.classes).toHaveLength(4);
    expect([...plan.halves.A.classes, ...plan.halves.B.classes].sort()).toEqual(classes.slice().sort());
  });

  it('refuses too few classes and bad caps, naming the field', () => {
    expect(splitError(() => planSplit(['a', 'b', 'c'], random(1)))).toMatch(/^split\.halves\.A: 1 class/);
    expect(splitError(() => planSplit(CIFAR, random(1, { valPerClass: -1 })))).toMatch(/^split\.caps\.valPerClass: /);
    expect(splitError(() => planSplit(CIFAR, random(1, { valPerClass: 1, trainPerClass: 0 })))).toMatch(
      /^split\.caps\.trainPerClass: /,
    );
    expect(splitError(() => planSplit(CIFAR, random(1.5)))).toMatch(/^split\.seed: /);
    expect(splitError(() => planSplit(['a', 'b', 'a', 'c'], random(1)))).toMatch(
      /^dataset\.classes\[2\]: class 'a' repeats/,
    );
  });
});

describe('planSplit, groups', () => {
  const groups = (A: string[], B: string[]): SplitSpec => ({
    kind: 'groups',
    groups: { A, B },
    caps: { valPerClass: 2 },
  });

  it('sorts each half by dataset label and remaps labels to 0..k-1', () => {
    const plan = planSplit(CIFAR, groups(['truck', 'airplane', 'ship', 'automobile'], ['frog', 'bird', 'cat']));
    expect(plan.halves.A.classes).toEqual(['airplane', 'automobile', 'ship', 'truck']);
    expect(plan.halves.A.sourceLabels).toEqual([0, 1, 8, 9]);
    expect(plan.halves.B.classes).toEqual(['bird', 'cat', 'frog']);
    expect(plan.halves.A.specPaths).toEqual([
      'split.groups.A[1]',
      'split.groups.A[3]',
      'split.groups.A[2]',
      'split.groups.A[0]',
    ]);
  });

  it('names the field path in every error', () => {
    expect(splitError(() => planSplit(CIFAR, groups(['cat', 'dog'], ['bird', 'ship', 'zebra'])))).toBe(
      "split.groups.B[2]: unknown class 'zebra'",
    );
    expect(splitError(() => planSplit(CIFAR, groups(['cat', 'dog'], ['Cat', 'ship'])))).toBe(
      "split.groups.B[0]: unknown class 'Cat' (did you mean 'cat'?)",
    );
    expect(splitError(() => planSplit(CIFAR, groups(['cat', 'dog'], ['bird', 'cat'])))).toBe(
      "split.groups.B[1]: class 'cat' is also in split.groups.A[0]",
    );
    expect(splitError(() => planSplit(CIFAR, groups(['cat', 'dog', 'cat'], ['bird', 'ship'])))).toBe(
      "split.groups.A[2]: class 'cat' repeats split.groups.A[0]",
    );
    expect(splitError(() => planSplit(CIFAR, groups(['cat'], ['bird', 'ship'])))).toMatch(
      /^split\.groups\.A: 1 class\(es\); each half needs at least 2/,
    );
    expect(splitError(() => planSplit(CIFAR, groups(['cat', 'dog'], [])))).toMatch(/^split\.groups\.B: 0 class/);
    expect(
      splitError(() =>
        planSplit(CIFAR, {
          kind: 'groups',
          groups: { A: ['cat', 'dog'], B: ['bird', 3] } as never,
          caps: { valPerClass: 1 },
        }),
      ),
    ).toMatch(/^split\.groups\.B\[1\]: expected a class name/);
  });
});

describe('parseGroupsYaml', () => {
  it('reads A and B', () => {
    expect(parseGroupsYaml('A: [cat, dog]\nB:\n  - ship\n  - truck\n', 'g.yaml')).toEqual({
      A: ['cat', 'dog'],
      B: ['ship', 'truck'],
    });
  });

  it('reports YAML syntax errors as file errors with an offset', () => {
    try {
      parseGroupsYaml('A: [cat, dog\nB: [ship]\n', 'groups.yaml');
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(DataError);
      expect((error as DataError).file).toBe('groups.yaml');
      expect((error as DataError).offset).toBeTypeOf('number');
    }
  });

  it('names the field path for shape errors', () => {
    expect(splitError(() => parseGroupsYaml('A: [cat, dog]\nB: [ship, 42]\n', 'g.yaml'))).toMatch(
      /^split\.groups\.B\[1\]: expected a class name .*g\.yaml/,
    );
    expect(splitError(() => parseGroupsYaml('A: [cat, dog]\nB: [ship]\nC: [x]\n', 'g.yaml'))).toMatch(
      /^split\.groups: 1 unknown key\(s\)/,
    );
    // A file that is not a groups file: its keys and values never reach the message.
    const leaked = splitError(() => parseGroupsYaml('db_password: hunter2\n', 'g.yaml'));
    expect(leaked).not.toMatch(/db_password|hunter2/);
    expect(splitError(() => parseGroupsYaml('A: [cat, dog]\n', 'g.yaml'))).toMatch(
      /^split\.groups\.B: expected a list/,
    );
    expect(splitError(() => parseGroupsYaml('- cat\n', 'g.yaml'))).toMatch(/^split\.groups: expected a mapping/);
  });
});

describe('selectImages', () => {
  it('carves val from train, disjoint, and applies the caps', () => {
    const data = dataset();
    const plan = planSplit(CIFAR, random(1, { valPerClass: 3, trainPerClass: 10, testPerClass: 4 }));
    const selection = selectImages(data, plan);
    for (const half of ['A', 'B'] as const) {
      const { train, val, test } = selection[half];
      expect(train.source).toBe('train');
      expect(val.source).toBe('train');
      expect(test.source).toBe('test');
      expect(train.perClass).toEqual([10, 10, 10, 10, 10]);
      expect(val.perClass).toEqual([3, 3, 3, 3, 3]);
      expect(test.perClass).toEqual([4, 4, 4, 4, 4]);
      const trainSet = new Set(train.indices);
      expect(trainSet.size).toBe(50);
      for (const index of val.indices) expect(trainSet.has(index)).toBe(false);
      expect(new Set(val.indices).size).toBe(15);
    }
  });

  it('remaps labels: local label l is the half class l, from its dataset label', () => {
    const data = dataset();
    const plan = planSplit(CIFAR, random(2));
    const selection = selectImages(data, plan);
    for (const half of ['A', 'B'] as const) {
      for (const subsetName of ['train', 'val', 'test'] as const) {
        const chosen = selection[half][subsetName];
        const from = chosen.source === 'train' ? data.train : data.test!;
        chosen.indices.forEach((index, i) => {
          const local = chosen.labels[i]!;
          expect(local).toBeGreaterThanOrEqual(0);
          expect(local).toBeLessThan(5);
          expect(from.labels[index]).toBe(plan.halves[half].sourceLabels[local]);
        });
      }
    }
  });

  it('is deterministic, stores classes interleaved, and raising the train cap only adds images', () => {
    const data = dataset();
    const small = selectImages(data, planSplit(CIFAR, random(4, { valPerClass: 2, trainPerClass: 5 })));
    const again = selectImages(data, planSplit(CIFAR, random(4, { valPerClass: 2, trainPerClass: 5 })));
    expect(again).toEqual(small);
    const large = selectImages(data, planSplit(CIFAR, random(4, { valPerClass: 2, trainPerClass: 10 })));
    expect(large.A.val.indices.slice().sort()).toEqual(small.A.val.indices.slice().sort());
    const largeTrain = new Set(large.A.train.indices);
    for (const index of small.A.train.indices) expect(largeTrain.has(index)).toBe(true);
    const labels = Array.from(large.A.train.labels);
    expect(labels).not.toEqual(labels.slice().sort((a, b) => a - b));
  });

  it('carves test from train after val when the dataset has no test subset', () => {
    const data = dataset({ test: null });
    const selection = selectImages(data, planSplit(CIFAR, random(1, { valPerClass: 2, testPerClass: 3 })));
    const { train, val, test } = selection.A;
    expect(test.source).toBe('train');
    expect(test.perClass).toEqual([3, 3, 3, 3, 3]);
    expect(train.perClass).toEqual([15, 15, 15, 15, 15]);
    const seen = new Set<number>();
    for (const index of [...train.indices, ...val.indices, ...test.indices]) {
      expect(seen.has(index)).toBe(false);
      seen.add(index);
    }
    // testPerClass defaults to valPerClass here.
    expect(selectImages(data, planSplit(CIFAR, random(1, { valPerClass: 2 }))).B.test.perClass).toEqual([
      2, 2, 2, 2, 2,
    ]);
  });

  it('refuses an empty class and a val cap that leaves no train images', () => {
    const empty = dataset({ train: CIFAR.map((_, i) => (i === 3 ? 0 : 20)) });
    const plan = planSplit(CIFAR, {
      kind: 'groups',
      groups: { A: ['airplane', 'cat'], B: ['dog', 'ship'] },
      caps: { valPerClass: 2 },
    });
    expect(splitError(() => selectImages(empty, plan))).toBe(
      "split.groups.A[1]: class 'cat' has no train images in dataset 'toy'",
    );
    const few = dataset({ train: CIFAR.map((_, i) => (i === 5 ? 2 : 20)) });
    expect(splitError(() => selectImages(few, plan))).toBe(
      "split.caps.valPerClass: valPerClass 2 leaves no train images for class 'dog' (half B), which has 2",
    );
    const noTest = dataset({ test: null });
    expect(
      splitError(() => selectImages(noTest, planSplit(CIFAR, random(1, { valPerClass: 10, testPerClass: 10 })))),
    ).toMatch(/^split\.caps\.valPerClass: valPerClass 10 \+ testPerClass 10 \(test is carved/);
    expect(
      splitError(() => selectImages(dataset({ classes: ['a', 'b', 'c', 'd'] }), planSplit(CIFAR, random(1)))),
    ).toMatch(/^dataset\.classes: /);
  });
});

describe('computeSplitId', () => {
  it('is content-addressed', () => {
    const data = dataset();
    const id = computeSplitId(data, random(1));
    expect(id).toMatch(/^toy-[0-9a-f]{16}$/);
    expect(computeSplitId(dataset(), random(1))).toBe(id);
    expect(computeSplitId({ ...dataset(), source: 'elsewhere' }, random(1))).toBe(id);
    expect(computeSplitId(data, random(2))).not.toBe(id);
    expect(computeSplitId(data, random(1, { valPerClass: 3 }))).not.toBe(id);
    const changed = dataset();
    changed.train.pixels[17]! ^= 1;
    expect(computeSplitId(changed, random(1))).not.toBe(id);
    const groups = (A: string[]): SplitSpec => ({
      kind: 'groups',
      groups: { A, B: ['cat', 'dog'] },
      caps: { valPerClass: 1 },
    });
    expect(computeSplitId(data, groups(['ship', 'bird']))).toBe(computeSplitId(data, groups(['bird', 'ship'])));
  });
});

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ALL_ARMS, armOf, parseArm } from './cells.ts';
import type { SweepPlan } from './cells.ts';
import { expandGrid, planOrderProblem } from './grid.ts';
import { parseSpec, validateSpec } from './spec.ts';
import type { SweepSpecInput } from './spec.ts';
import { DEMO_YAML } from './test-fixtures.ts';

const demo = (): SweepPlan => expandGrid(parseSpec(DEMO_YAML, 'demo.yaml'));

function plan(input: Partial<SweepSpecInput>): SweepPlan {
  return expandGrid(validateSpec({ name: 'p', dataset: { kind: 'mnist' }, ...input }));
}

/** name -> id, for comparing which cells changed between two plans */
function idsByName(p: SweepPlan): Map<string, string> {
  return new Map(p.cells.map((cell) => [cell.name, cell.id]));
}

function changedNames(a: SweepPlan, b: SweepPlan): string[] {
  const before = idsByName(a);
  return [...idsByName(b)].filter(([name, id]) => before.has(name) && before.get(name) !== id).map(([name]) => name);
}

describe('arms', () => {
  it('parses the paper names and back', () => {
    expect(parseArm('AnB+')).toEqual({ arm: 'AnB+', kind: 'transfer', source: 'A', target: 'B', mode: 'fine-tuned' });
    expect(parseArm('BnB')).toEqual({ arm: 'BnB', kind: 'transfer', source: 'B', target: 'B', mode: 'frozen' });
    expect(parseArm('baseA')).toEqual({ arm: 'baseA', kind: 'base', target: 'A' });
    expect(parseArm('RnA')).toEqual({ arm: 'RnA', kind: 'random', target: 'A', mode: 'frozen' });
    expect(parseArm('controlB')).toEqual({
      arm: 'controlB',
      kind: 'control',
      source: 'B',
      target: 'B',
      mode: 'fine-tuned',
    });
    expect(() => parseArm('AnC')).toThrow("unknown arm 'AnC'");
    for (const arm of ALL_ARMS) expect(armOf(parseArm(arm))).toBe(arm);
  });
});

describe('expandGrid', () => {
  it('expands the demo into 2 base and 28 transfer cells', () => {
    const p = demo();
    expect(p.splits).toHaveLength(1);
    expect(p.cells).toHaveLength(30);
    expect(p.cells.filter((cell) => cell.kind === 'base').map((cell) => cell.name)).toEqual([
      'baseA seed=1',
      'baseB seed=1',
    ]);
    expect(p.cells.filter((cell) => cell.kind === 'transfer')).toHaveLength(28);
    expect(p.cells.map((cell) => cell.name)).toContain('AnB+ n=3 seed=1');
  });

  it('orders cells so that every dependency comes first', () => {
    const p = plan({ repeats: 3, arms: [...ALL_ARMS] });
    expect(planOrderProblem(p)).toBeNull();
    const firstTransfer = p.cells.findIndex((cell) => cell.kind !== 'base');
    expect(p.cells.slice(firstTransfer).every((cell) => cell.kind !== 'base')).toBe(true);
    const byId = new Map(p.cells.map((cell) => [cell.id, cell]));
    for (const cell of p.cells) {
      if (cell.kind === 'transfer' || cell.kind === 'control') {
        const source = byId.get(cell.sourceCellId!)!;
        expect(cell.deps).toEqual([source.id]);
        expect(source).toMatchObject({ kind: 'base', target: cell.source, seed: cell.seed, splitId: cell.splitId });
      } else {
        expect(cell.deps).toEqual([]);
      }
    }
    expect(p.cells.find((cell) => cell.name === 'RnB n=2 seed=3')).toMatchObject({
      kind: 'random',
      target: 'B',
      n: 2,
      mode: 'frozen',
    });
    expect(p.cells.find((cell) => cell.name === 'controlA seed=3')).toMatchObject({
      kind: 'control',
      source: 'A',
      target: 'A',
      mode: 'fine-tuned',
    });
    // 2 base + 10 arms x 7 n + 2 controls, per seed
    expect(p.cells).toHaveLength(3 * (2 + 10 * 7 + 2));
  });

  it('draws one random split per seed, and shares named groups across seeds', () => {
    expect(plan({ repeats: 3 }).splits.map((split) => split.seed)).toEqual([1, 2, 3]);
    const groups = plan({ repeats: 3, split: { kind: 'groups', groups: { A: [0, 1, 2, 3, 4], B: [5, 6, 7, 8, 9] } } });
    expect(groups.splits).toHaveLength(1);
    expect(new Set(groups.cells.map((cell) => cell.splitId)).size).toBe(1);
    // still one init per seed
    expect(new Set(groups.cells.filter((cell) => cell.arm === 'baseB').map((cell) => cell.id)).size).toBe(3);
  });

  it('adds the base cells transfer arms copy from, flagged implicit', () => {
    const p = plan({ arms: ['AnB', 'RnB', 'controlB'], layers: [2], repeats: 1 });
    expect(p.cells.map((cell) => [cell.name, cell.implicit ?? false])).toEqual([
      ['baseA seed=1', true],
      ['baseB seed=1', true],
      ['AnB n=2 seed=1', false],
      ['RnB n=2 seed=1', false],
      ['controlB seed=1', false],
    ]);
    expect(demo().cells.some((cell) => cell.implicit)).toBe(false);
  });

  it('applies the base overrides to base cells only', () => {
    const p = demo();
    expect(p.cells.find((cell) => cell.arm === 'baseB')!.training).toMatchObject({
      maxEpochs: 30,
      learningRate: 0.01,
    });
    expect(p.cells.find((cell) => cell.arm === 'AnB')!.training.maxEpochs).toBe(10);
  });

  it('keeps ids stable', () => {
    const p = demo();
    // Pinned: if this changes, every stored result is orphaned. Bump ID_VERSION on purpose, not by accident.
    expect(p.splits[0]!.id).toBe('bdc1d42fd38829e53c6b');
    expect(p.cells.find((cell) => cell.name === 'AnB+ n=3 seed=1')!.id).toBe('a49b6f134efd349b7e4b');
    expect(p.cells.every((cell) => /^[0-9a-f]{20}$/.test(cell.id))).toBe(true);
    expect(new Set(p.cells.map((cell) => cell.id)).size).toBe(p.cells.length);
  });

  it('keeps the ids of the CIFAR-10 CPU preset, whose measured run resumes by cell id', () => {
    const file = new URL('../../../examples/cifar10-cpu.yaml', import.meta.url);
    const p = expandGrid(parseSpec(readFileSync(file, 'utf8'), 'cifar10-cpu.yaml'));
    const measured = new Set(['baseB2', 'measureB']);
    const grid = p.cells.filter((cell) => !measured.has(cell.arm));
    const digest = createHash('sha256')
      .update(grid.map((cell) => cell.id).join('\n'))
      .digest('hex');
    // Pinned from the preset of the run in docs/results.md (250 images per class, 50 epochs);
    // `measures` only adds cells (a second baseB and the measures, per repeat).
    expect([grid.length, digest]).toEqual([114, 'a44f9353665c821de8793da205a5ae61a2afeb3bd38e63b7cc9aedc8b56f54b4']);
    expect(p.cells.length - grid.length).toBe(6);
  });

  it('makes fixed augmented views part of every id, and views: random none', () => {
    const augmented = plan({ training: { augment: { crop: 4, mirror: true } } });
    const random = plan({ training: { augment: { crop: 4, mirror: true, views: 'random' } } });
    const fixed = plan({ training: { augment: { crop: 4, mirror: true, views: 'fixed' } } });
    expect(changedNames(augmented, random)).toEqual([]);
    expect(changedNames(augmented, fixed)).toEqual([...idsByName(augmented).keys()]);
  });

  it('gives the same cell the same id in another sweep', () => {
    const a = demo();
    const b = expandGrid({
      ...parseSpec(DEMO_YAML, 'demo.yaml'),
      name: 'other',
      concurrency: 3,
      arms: ['AnB+', 'RnB'],
      layers: [3, 1],
    });
    expect(idsByName(b).get('AnB+ n=3 seed=1')).toBe(idsByName(a).get('AnB+ n=3 seed=1'));
    expect(idsByName(b).get('baseA seed=1')).toBe(idsByName(a).get('baseA seed=1'));
    expect(changedNames(a, b)).toEqual([]);
    // more repeats add seeds without touching seed 1
    expect(changedNames(a, expandGrid({ ...parseSpec(DEMO_YAML, 'demo.yaml'), repeats: 2 }))).toEqual([]);
  });

  describe('changing one hyper-parameter changes exactly the ids it touches', () => {
    const withRandom = { arms: ['baseA', 'baseB', 'BnB', 'AnB+', 'RnB'] as SweepSpecInput['arms'], layers: [1, 4] };
    const base = { ...withRandom, base: { maxEpochs: 30 } };
    const all = plan(base).cells.map((cell) => cell.name);
    const nonBase = plan(base)
      .cells.filter((cell) => cell.kind !== 'base')
      .map((cell) => cell.name);
    const transfer = plan(base)
      .cells.filter((cell) => cell.kind === 'transfer')
      .map((cell) => cell.name);

    it('base.maxEpochs: base cells, and the transfer cells that copy from them; not RnB', () => {
      const changed = changedNames(plan(base), plan({ ...base, base: { maxEpochs: 40 } }));
      expect(changed.sort()).toEqual([...all.filter((name) => name.startsWith('base')), ...transfer].sort());
      expect(changed.some((name) => name.startsWith('RnB'))).toBe(false);
    });

    it('training.maxEpochs while base overrides it: every cell but the base cells', () => {
      const changed = changedNames(plan(base), plan({ ...base, training: { maxEpochs: 12 } }));
      expect(changed.sort()).toEqual([...nonBase].sort());
    });

    it('training.maxEpochs with no base override: every cell', () => {
      const changed = changedNames(plan(withRandom), plan({ ...withRandom, training: { maxEpochs: 12 } }));
      expect(changed.sort()).toEqual([...all].sort());
    });

    it('training.learningRate while base overrides only maxEpochs: every cell', () => {
      expect(changedNames(plan(base), plan({ ...base, training: { learningRate: 0.02 } })).sort()).toEqual(
        [...all].sort(),
      );
    });

    it('a base override equal to the shared value: nothing', () => {
      expect(changedNames(plan(base), plan({ ...base, base: { maxEpochs: 30, learningRate: 0.01 } }))).toEqual([]);
    });

    it('split caps: the split, hence every cell', () => {
      const a = plan(base);
      const b = plan({ ...base, split: { trainPerClass: 500 } });
      expect(b.splits[0]!.id).not.toBe(a.splits[0]!.id);
      expect(changedNames(a, b).sort()).toEqual([...all].sort());
    });

    it('scoreTopK and checkpointEveryEpochs: nothing (they do not change what a cell learns)', () => {
      expect(changedNames(plan(base), plan({ ...base, training: { scoreTopK: 5, checkpointEveryEpochs: 2 } }))).toEqual(
        [],
      );
    });

    it('net width: every cell', () => {
      expect(changedNames(plan(base), plan({ ...base, net: { width: 0.5 } })).sort()).toEqual([...all].sort());
    });
  });
});

describe('measure cells', () => {
  const arms = ['baseA', 'baseB', 'AnB', 'AnB+'] as const;
  const without = plan({ arms: [...arms], layers: [1, 2], repeats: 2 });
  const withMeasures = plan({ arms: [...arms], layers: [1, 2], repeats: 2, measures: {} });

  it('add a second baseB and one measure cell per repeat, and change no other id', () => {
    const added = withMeasures.cells.filter((cell) => !without.cells.some((c) => c.id === cell.id));
    expect(added.map((cell) => cell.name).sort()).toEqual([
      'baseB2 seed=1',
      'baseB2 seed=2',
      'measureB seed=1',
      'measureB seed=2',
    ]);
    expect(changedNames(without, withMeasures)).toEqual([]);
    expect(planOrderProblem(withMeasures)).toBeNull();
    for (const seed of [1, 2]) {
      const of = (arm: string) => withMeasures.cells.find((cell) => cell.arm === arm && cell.seed === seed)!;
      expect(of('baseB2').id).not.toBe(of('baseB').id);
      expect(of('baseB2')).toMatchObject({ kind: 'base', target: 'B', replica: 2, splitId: of('baseB').splitId });
      const measure = of('measureB');
      expect(measure).toMatchObject({ kind: 'measure', target: 'B', source: 'A' });
      expect(measure.measure).toEqual({
        sourceCellId: of('baseA').id,
        targetCellId: of('baseB').id,
        replicaCellId: of('baseB2').id,
        examples: 500,
        maxFeatures: 1024,
        batch: 500,
      });
      expect(measure.deps).toEqual([of('baseA').id, of('baseB').id, of('baseB2').id]);
    }
  });

  it('with only: the base nets and the measures, the same cells by id', () => {
    const only = plan({ arms: [...arms], layers: [1, 2], repeats: 2, measures: { only: true } });
    expect(only.cells.map((cell) => cell.arm).sort()).toEqual(
      ['baseA', 'baseA', 'baseB', 'baseB', 'baseB2', 'baseB2', 'measureB', 'measureB'].sort(),
    );
    const ids = new Set(withMeasures.cells.map((cell) => cell.id));
    expect(only.cells.every((cell) => ids.has(cell.id))).toBe(true);
  });

  it('a changed measure setting changes only the measure cells', () => {
    const more = plan({ arms: [...arms], layers: [1, 2], repeats: 2, measures: { examples: 2000 } });
    expect(changedNames(withMeasures, more).sort()).toEqual(['measureB seed=1', 'measureB seed=2']);
  });

  it('are refused in arms: they are not lines of Figure 2', () => {
    expect(() => plan({ arms: ['baseA', 'measureB' as 'baseA'] })).toThrow(/unknown arm 'measureB'/);
  });
});

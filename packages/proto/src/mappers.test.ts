import { ALL_ARMS, expandGrid, parseSpec, splitId, validateSpec } from '@transferlab/experiment';
import type { CellResult as DomainCellResult, SplitTask, SweepDataset, SweepSplit } from '@transferlab/experiment';
import { DEMO_YAML } from '@transferlab/experiment/test-fixtures';
import { describe, expect, it } from 'vitest';
import {
  Arm,
  Cell,
  CellResult,
  CellState,
  CreateSplitRequest,
  Half,
  Progress,
  SplitState,
  SweepSpec,
  TransferMode,
} from './index.ts';
import {
  MapperError,
  armFromProto,
  armToProto,
  cellFromProto,
  cellIdFromProto,
  cellMismatches,
  cellResultFromProto,
  cellResultToProto,
  cellToProto,
  checkpointPrefix,
  checkpointRef,
  datasetFromProto,
  datasetPaths,
  halfFromProto,
  progressFromProto,
  progressToProto,
  splitManifestToProto,
  splitSettingsFromProto,
  splitSettingsToProto,
  splitTaskToProto,
  sweepSpecFromProto,
  sweepSpecToProto,
  trainingFromProto,
  trainingToProto,
} from './mappers.ts';
import type { ProgressReport, ResultRecord } from './mappers.ts';

// Every mapper pair is checked as a round trip through the wire encoding, so that a field the
// codec drops (an unset optional, a default enum) shows up here and not in a service.

const wire = {
  cell: (cell: Cell): Cell => Cell.decode(Cell.encode(cell).finish()),
  result: (result: CellResult): CellResult => CellResult.decode(CellResult.encode(result).finish()),
  progress: (progress: Progress): Progress => Progress.decode(Progress.encode(progress).finish()),
  spec: (spec: SweepSpec): SweepSpec => SweepSpec.decode(SweepSpec.encode(spec).finish()),
};

/** Every arm, both targets, frozen and fine-tuned, random cells, and a base with augment off. */
const plan = expandGrid(
  validateSpec({
    name: 'mappers',
    dataset: { kind: 'mnist' },
    split: { trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
    net: { width: 0.25 },
    training: { maxEpochs: 2, schedule: { stepEpochs: 1, gamma: 0.5 } },
    base: { augment: false, patience: 1 },
    layers: [1, 3],
    arms: [...ALL_ARMS],
    repeats: 2,
  }),
);

describe('enum tables', () => {
  it('maps every arm both ways, and refuses ARM_UNSPECIFIED naming the field', () => {
    for (const arm of ALL_ARMS) expect(armFromProto(armToProto(arm))).toBe(arm);
    expect(armToProto('AnB+')).toBe(Arm.ARM_ANB_PLUS);
    expect(armToProto('RnA')).toBe(Arm.ARM_RNA);
    expect(new Set(ALL_ARMS.map(armToProto)).size).toBe(ALL_ARMS.length);
    expect(() => armFromProto(Arm.ARM_UNSPECIFIED, 'cell.arm')).toThrow(MapperError);
    expect(() => armFromProto(Arm.ARM_UNSPECIFIED, 'cell.arm')).toThrow(/^cell\.arm: ARM_UNSPECIFIED/);
    expect(() => halfFromProto(Half.HALF_UNSPECIFIED, 'half')).toThrow(/half: HALF_UNSPECIFIED/);
  });
});

describe('cells', () => {
  it('round-trips every cell of a grid through the wire', () => {
    expect(plan.cells.length).toBeGreaterThan(40);
    for (const cell of plan.cells) expect(cellFromProto(wire.cell(cellToProto(cell)))).toEqual(cell);
  });

  it('carries the controller extras and the printed names', () => {
    const cell = plan.cells.find((c) => c.arm === 'AnB+')!;
    const proto = wire.cell(cellToProto(cell, { state: CellState.CELL_STATE_FAILED, attempts: 2, error: 'boom' }));
    expect(proto).toMatchObject({
      arm: Arm.ARM_ANB_PLUS,
      source: Half.HALF_A,
      target: Half.HALF_B,
      mode: TransferMode.TRANSFER_MODE_FINE_TUNED,
      state: CellState.CELL_STATE_FAILED,
      attempts: 2,
      error: 'boom',
      sourceCellId: cell.sourceCellId,
    });
    const base = plan.cells.find((c) => c.kind === 'base')!;
    expect(wire.cell(cellToProto(base)).training?.augment).toEqual({ disabled: true, crop: 0, mirror: false });
  });

  it('takes the id of a request cell and refuses a request without one', () => {
    expect(cellIdFromProto(Cell.fromPartial({ id: 'abc' }))).toBe('abc');
    expect(() => cellIdFromProto(undefined)).toThrow(/^cell: is required/);
    expect(() => cellIdFromProto(Cell.fromPartial({}))).toThrow(/^cell\.id: is required/);
  });

  it('finds no mismatch in an id-only or full request, and names every contradicting field', () => {
    const cell = plan.cells.find((c) => c.arm === 'BnA' && c.n === 3)!;
    expect(cellMismatches(cell, Cell.fromPartial({ id: cell.id }))).toEqual([]);
    expect(cellMismatches(cell, wire.cell(cellToProto(cell)))).toEqual([]);
    const wrong = cellToProto(cell);
    wrong.n = 4;
    wrong.target = Half.HALF_B;
    wrong.training = { ...wrong.training, learningRate: 0.5 };
    expect(cellMismatches(cell, wrong)).toEqual([
      'cell.target is "HALF_B", the stored cell has "HALF_A"',
      'cell.n is 4, the stored cell has 3',
      'cell.training.learning_rate is 0.5, the stored cell has 0.01',
    ]);
  });
});

describe('training', () => {
  it('fills unset fields with the spec defaults and keeps a cell’s values', () => {
    const cell = plan.cells[0]!;
    expect(trainingFromProto(trainingToProto(cell.training))).toEqual(cell.training);
    expect(trainingFromProto(undefined)).toEqual(validateSpec({ name: 'x', dataset: { kind: 'mnist' } }).training);
  });
});

describe('progress', () => {
  it('counts epochs and batches from 0 on the wire and from 1 in the runner, with steps', () => {
    const report: ProgressReport = {
      phase: 'training',
      epoch: 3,
      maxEpochs: 10,
      batch: 5,
      batchesPerEpoch: 20,
      loss: 1.25,
      valTop1: 0.5,
      imagesPerSecond: 300,
    };
    const time = new Date('2025-01-02T03:04:05.000Z');
    const proto = wire.progress(progressToProto('cell-1', report, time));
    expect(proto).toMatchObject({ cellId: 'cell-1', epoch: 2, batch: 4, step: 45, epochDone: false, time });
    expect(progressFromProto(proto)).toEqual(report);
    const closing: ProgressReport = { ...report, batch: 20, epochDone: true };
    expect(progressFromProto(wire.progress(progressToProto('cell-1', closing)))).toEqual(closing);
    expect(progressFromProto(wire.progress(progressToProto('cell-1', { phase: 'preparing' })))).toEqual({
      phase: 'preparing',
    });
  });
});

describe('results', () => {
  const result: ResultRecord = {
    cellId: 'c1',
    name: 'AnB n=3 seed=1',
    arm: 'AnB',
    kind: 'transfer',
    n: 3,
    seed: 1,
    target: 'B',
    score: 0.61,
    valTop1History: [0.4, 0.55, 0.61],
    testTop1: 0.6,
    testTop5: 0.9,
    perClass: { '0': 0.5, '1': NaN },
    epochs: 3,
    stoppedBy: 'plateau',
    stillImproving: false,
    seconds: 12.5,
    imagesPerSecond: 250,
    backend: 'tensorflow',
    peakRssBytes: 512 * 1024 * 1024,
    prefixCache: { mode: 'exact', layer: 'conv3', bytes: 3_145_728 },
  };

  it('round-trips a stored result, NaN per-class values and the prefix cache’s use included', () => {
    expect(cellResultFromProto(wire.result(cellResultToProto(result)))).toEqual(result);
    const uncached = { ...result, prefixCache: { mode: 'uncached' as const, reason: 'no frozen layers to cache' } };
    expect(cellResultFromProto(wire.result(cellResultToProto(uncached)))).toEqual(uncached);
    const strange = { ...cellResultToProto(result), prefixCache: { mode: 'sometimes' } };
    expect(() => cellResultFromProto(strange)).toThrow("result.prefix_cache.mode: 'sometimes' is not one of");
  });

  it('leaves out what a result does not have', () => {
    const bare: DomainCellResult = {
      cellId: 'c2',
      name: 'baseB seed=1',
      arm: 'baseB',
      kind: 'base',
      seed: 1,
      target: 'B',
      score: 0.7,
      valTop1History: [0.7],
      epochs: 1,
      stoppedBy: 'max-epochs',
      stillImproving: true,
      seconds: 1,
    };
    expect(cellResultFromProto(wire.result(cellResultToProto(bare)))).toEqual(bare);
  });

  it('attaches the final checkpoint', () => {
    const ref = checkpointRef('cells/c1/final', 'ab'.repeat(32));
    expect(wire.result(cellResultToProto(result, { finalCheckpoint: ref })).finalCheckpoint).toEqual({
      key: 'cells/c1/final/manifest.json',
      sha256: 'ab'.repeat(32),
    });
  });
});

describe('checkpoint references', () => {
  it('always name the manifest and give back the prefix', () => {
    expect(checkpointRef('cells/x/initial').key).toBe('cells/x/initial/manifest.json');
    expect(checkpointRef('cells/x/initial/manifest.json')).toEqual({
      key: 'cells/x/initial/manifest.json',
      sha256: '',
    });
    expect(checkpointPrefix(checkpointRef('cells/x/final/'))).toBe('cells/x/final');
  });
});

describe('datasets and splits', () => {
  const datasets: SweepDataset[] = [
    { kind: 'mnist' },
    { kind: 'idx', trainImages: '/d/train-images.gz', trainLabels: '/d/train-labels.gz' },
    {
      kind: 'idx',
      trainImages: 'a',
      trainLabels: 'b',
      testImages: 'c',
      testLabels: 'd',
      classes: ['zero', 'one'],
    },
    { kind: 'cifar10', path: '/data/cifar-10-binary.tar.gz' },
    { kind: 'cifar100', path: '/data/c100', labels: 'coarse' },
    { kind: 'cifar100', path: '/data/c100', labels: 'fine' },
    { kind: 'image-folder', path: '/imgs' },
    {
      kind: 'image-folder',
      path: '/imgs',
      train: 'tr',
      test: 'te',
      imageSize: [32, 24],
      channels: 3,
      limitPerClass: 10,
    },
  ];

  it('round-trips every dataset kind and keeps the split id', () => {
    const split = validateSpec({ name: 'x', dataset: { kind: 'mnist' } }).split;
    for (const dataset of datasets) {
      const request = CreateSplitRequest.decode(
        CreateSplitRequest.encode({
          ...splitTaskToProto({ id: '', seed: 2, dataset, split }),
          expectedSplitId: '',
          wait: true,
        }).finish(),
      );
      const back = datasetFromProto(request.dataset);
      expect(back).toEqual(dataset);
      const task: Omit<SplitTask, 'id'> = {
        seed: request.seed,
        dataset: back,
        split: splitSettingsFromProto(request.settings),
      };
      expect(splitId(task)).toBe(splitId({ seed: 2, dataset, split }));
    }
  });

  it('names the paths a dataset reads by their proto fields', () => {
    expect(datasetPaths(datasets[2]!).map((p) => p.field)).toEqual([
      'dataset.idx.train_images',
      'dataset.idx.train_labels',
      'dataset.idx.test_images',
      'dataset.idx.test_labels',
    ]);
    expect(datasetPaths({ kind: 'mnist' })).toEqual([]);
  });

  it('refuses a dataset with no kind', () => {
    expect(() => datasetFromProto({}, 'dataset')).toThrow(/^dataset: is required/);
  });

  it('round-trips split settings, groups by name and by index, applying the defaults', () => {
    const groups: SweepSplit = {
      kind: 'groups',
      groups: { A: ['cat', 3], B: ['dog', 0] },
      trainPerClass: 20,
      valPerClass: 5,
      testPerClass: 7,
    };
    expect(splitSettingsFromProto(splitSettingsToProto(groups))).toEqual(groups);
    expect(splitSettingsFromProto(undefined)).toEqual({ kind: 'random', valPerClass: 50 });
  });

  it('describes a stored manifest as a READY split', () => {
    const count = (n: number) => ({ count: n });
    const split = splitManifestToProto(
      {
        splitId: 's1',
        shape: [28, 28, 1],
        halves: {
          A: { classes: ['0', '1'], subsets: { train: count(40), val: count(10), test: count(10) } },
          B: { classes: ['2', '3'], subsets: { train: count(38), val: count(10), test: count(9) } },
        },
      },
      { task: { seed: 1, dataset: { kind: 'mnist' }, split: { kind: 'random', valPerClass: 5 } } },
    );
    expect(split).toMatchObject({
      id: 's1',
      seed: 1,
      state: SplitState.SPLIT_STATE_READY,
      manifestKey: 'splits/s1/manifest.json',
      imageShape: { height: 28, width: 28, channels: 1 },
      halves: [
        { half: Half.HALF_A, classes: ['0', '1'], trainCount: 40, valCount: 10, testCount: 10 },
        { half: Half.HALF_B, classes: ['2', '3'], trainCount: 38, valCount: 10, testCount: 9 },
      ],
    });
  });
});

describe('sweep specs', () => {
  it('round-trips a spec file to the same validated spec', () => {
    const spec = parseSpec(DEMO_YAML, 'demo.yaml');
    expect(validateSpec(sweepSpecFromProto(wire.spec(sweepSpecToProto(spec))))).toEqual(spec);
  });

  it('leaves unset fields unset so the spec defaults apply', () => {
    const minimal = { name: 'tiny', dataset: { kind: 'mnist' as const } };
    expect(sweepSpecFromProto(wire.spec(sweepSpecToProto(minimal)))).toEqual(minimal);
    expect(validateSpec(sweepSpecFromProto(wire.spec(sweepSpecToProto(minimal))))).toEqual(validateSpec(minimal));
  });
});

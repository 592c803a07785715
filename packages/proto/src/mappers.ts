/**
 * Named mappers between transferlab's domain types (`@transferlab/experiment`, the runner's
 * progress and results) and the generated gRPC messages. Every service converts at its gRPC
 * edge with these, so that no handler maps a field inline and every mapping is tested once.
 *
 * Direction is in the name: `xToProto` builds a message from a domain value, `xFromProto`
 * reads one. A `*FromProto` that meets a message it cannot turn into a domain value throws a
 * `MapperError` naming the field; services answer it with INVALID_ARGUMENT.
 */
import { TRAINING_DEFAULTS } from '@transferlab/experiment';
import type {
  Arm as DomainArm,
  Cell as DomainCell,
  CellKind as DomainCellKind,
  CellResult as DomainCellResult,
  Half as DomainHalf,
  NetSpec,
  SplitTask,
  StoppedBy as DomainStoppedBy,
  SweepDataset,
  SweepSpecInput,
  SweepSplit,
  TrainingSpec,
  TransferMode as DomainTransferMode,
} from '@transferlab/experiment';
import {
  Arm,
  CellKind,
  CellPhase,
  CellState,
  StoppedBy,
  TransferMode,
  type CellResult,
  type Cell,
  type CheckpointRef,
  type Progress,
} from './gen/transferlab/v1/cell.ts';
import { Cifar100Labels, type Dataset } from './gen/transferlab/v1/dataset.ts';
import {
  Half,
  SplitKind,
  SplitState,
  type ClassRef,
  type Split,
  type SplitSettings,
} from './gen/transferlab/v1/split.ts';
import type { SweepSpec } from './gen/transferlab/v1/sweep.ts';
import { NetInit, NetKind, type Net, type Training } from './gen/transferlab/v1/training.ts';

/** A message (or a field of one) that has no domain meaning; `field` is its proto path. */
export class MapperError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'MapperError';
  }
}

// ---------------------------------------------------------------------------------------
// Enum tables. Each pair is one table and its inverse, so the two directions cannot drift.

function invert<K extends string, V extends string>(table: Record<K, V>): Map<V, K> {
  return new Map(Object.entries(table).map(([key, value]) => [value as V, key as K]));
}

function fromTable<K extends string, V extends string>(inverse: Map<V, K>, value: V, field: string): K {
  const found = inverse.get(value);
  if (found === undefined) throw new MapperError(field, `${value} has no meaning here`);
  return found;
}

const ARMS: Record<DomainArm, Arm> = {
  baseA: Arm.ARM_BASE_A,
  baseB: Arm.ARM_BASE_B,
  BnB: Arm.ARM_BNB,
  'BnB+': Arm.ARM_BNB_PLUS,
  AnB: Arm.ARM_ANB,
  'AnB+': Arm.ARM_ANB_PLUS,
  AnA: Arm.ARM_ANA,
  'AnA+': Arm.ARM_ANA_PLUS,
  BnA: Arm.ARM_BNA,
  'BnA+': Arm.ARM_BNA_PLUS,
  RnB: Arm.ARM_RNB,
  RnA: Arm.ARM_RNA,
  controlB: Arm.ARM_CONTROL_B,
  controlA: Arm.ARM_CONTROL_A,
  baseB2: Arm.ARM_BASE_B2,
  measureB: Arm.ARM_MEASURE_B,
};
const ARMS_BACK = invert(ARMS);

/** `'AnB+'` -> `Arm.ARM_ANB_PLUS`. */
export function armToProto(arm: DomainArm): Arm {
  return ARMS[arm];
}

/** `Arm.ARM_ANB_PLUS` -> `'AnB+'`; throws for ARM_UNSPECIFIED. */
export function armFromProto(arm: Arm, field = 'arm'): DomainArm {
  return fromTable(ARMS_BACK, arm, field);
}

const HALVES: Record<DomainHalf, Half> = { A: Half.HALF_A, B: Half.HALF_B };
const HALVES_BACK = invert(HALVES);

/** `'A'` -> `Half.HALF_A`; undefined -> HALF_UNSPECIFIED (for a base cell's source). */
export function halfToProto(half: DomainHalf | undefined): Half {
  return half === undefined ? Half.HALF_UNSPECIFIED : HALVES[half];
}

/** `Half.HALF_A` -> `'A'`; throws for HALF_UNSPECIFIED. */
export function halfFromProto(half: Half, field = 'half'): DomainHalf {
  return fromTable(HALVES_BACK, half, field);
}

/** Like halfFromProto, but HALF_UNSPECIFIED is undefined (optional fields such as a cell's source). */
export function optionalHalfFromProto(half: Half, field = 'half'): DomainHalf | undefined {
  return half === Half.HALF_UNSPECIFIED ? undefined : halfFromProto(half, field);
}

const KINDS: Record<DomainCellKind, CellKind> = {
  base: CellKind.CELL_KIND_BASE,
  transfer: CellKind.CELL_KIND_TRANSFER,
  random: CellKind.CELL_KIND_RANDOM,
  control: CellKind.CELL_KIND_CONTROL,
  measure: CellKind.CELL_KIND_MEASURE,
};
const KINDS_BACK = invert(KINDS);

export function cellKindToProto(kind: DomainCellKind): CellKind {
  return KINDS[kind];
}

export function cellKindFromProto(kind: CellKind, field = 'kind'): DomainCellKind {
  return fromTable(KINDS_BACK, kind, field);
}

const MODES: Record<DomainTransferMode, TransferMode> = {
  frozen: TransferMode.TRANSFER_MODE_FROZEN,
  'fine-tuned': TransferMode.TRANSFER_MODE_FINE_TUNED,
};
const MODES_BACK = invert(MODES);

/** `'fine-tuned'` -> TRANSFER_MODE_FINE_TUNED; undefined (base cells) -> TRANSFER_MODE_UNSPECIFIED. */
export function transferModeToProto(mode: DomainTransferMode | undefined): TransferMode {
  return mode === undefined ? TransferMode.TRANSFER_MODE_UNSPECIFIED : MODES[mode];
}

/** TRANSFER_MODE_UNSPECIFIED -> undefined (base cells have no mode). */
export function transferModeFromProto(mode: TransferMode, field = 'mode'): DomainTransferMode | undefined {
  return mode === TransferMode.TRANSFER_MODE_UNSPECIFIED ? undefined : fromTable(MODES_BACK, mode, field);
}

const STOPS: Record<DomainStoppedBy, StoppedBy> = {
  plateau: StoppedBy.STOPPED_BY_PLATEAU,
  'max-epochs': StoppedBy.STOPPED_BY_MAX_EPOCHS,
  'time-limit': StoppedBy.STOPPED_BY_TIME_LIMIT,
};
const STOPS_BACK = invert(STOPS);

export function stoppedByToProto(stoppedBy: DomainStoppedBy): StoppedBy {
  return STOPS[stoppedBy];
}

export function stoppedByFromProto(stoppedBy: StoppedBy, field = 'stopped_by'): DomainStoppedBy {
  return fromTable(STOPS_BACK, stoppedBy, field);
}

const NET_KINDS: Record<NetSpec['kind'], NetKind> = {
  small: NetKind.NET_KIND_SMALL,
  caffenet: NetKind.NET_KIND_CAFFENET,
};
const NET_KINDS_BACK = invert(NET_KINDS);

export function netKindToProto(kind: NetSpec['kind']): NetKind {
  return NET_KINDS[kind];
}

/** NET_KIND_UNSPECIFIED means SMALL, as the proto documents. */
export function netKindFromProto(kind: NetKind, field = 'net.kind'): NetSpec['kind'] {
  return kind === NetKind.NET_KIND_UNSPECIFIED ? 'small' : fromTable(NET_KINDS_BACK, kind, field);
}

/** The phases the runner reports, and the proto's. */
export type ProgressPhase = 'preparing' | 'training' | 'evaluating';
const PHASES: Record<ProgressPhase, CellPhase> = {
  preparing: CellPhase.CELL_PHASE_PREPARING,
  training: CellPhase.CELL_PHASE_TRAINING,
  evaluating: CellPhase.CELL_PHASE_EVALUATING,
};
const PHASES_BACK = invert(PHASES);

export function phaseToProto(phase: ProgressPhase): CellPhase {
  return PHASES[phase];
}

export function phaseFromProto(phase: CellPhase, field = 'phase'): ProgressPhase {
  return fromTable(PHASES_BACK, phase, field);
}

// ---------------------------------------------------------------------------------------
// Checkpoints.

/**
 * A checkpoint reference. `key` may be the checkpoint's prefix (`cells/<id>/final`, as the
 * runner names it) or its manifest; the reference always names the manifest.
 */
export function checkpointRef(key: string, sha256 = ''): CheckpointRef {
  const manifest = key.endsWith('/manifest.json') ? key : `${key.replace(/\/+$/, '')}/manifest.json`;
  return { key: manifest, sha256 };
}

/** The checkpoint's prefix (what the runner's loadCheckpoint takes) from a reference. */
export function checkpointPrefix(ref: CheckpointRef): string {
  return ref.key.replace(/\/manifest\.json$/, '');
}

// ---------------------------------------------------------------------------------------
// Net and training.

const INITS: Record<NetSpec['init'], NetInit> = { he: NetInit.NET_INIT_HE, paper: NetInit.NET_INIT_PAPER };
const INITS_BACK = invert(INITS);

export function netToProto(net: NetSpec): Net {
  return {
    kind: netKindToProto(net.kind),
    width: net.width,
    dropout: net.dropout,
    lrn: net.lrn,
    init: INITS[net.init],
  };
}

/** A cell's net: unset fields take the spec's defaults (small, width 1, dropout 0.5, he init). */
export function netFromProto(net: Net | undefined, field = 'net'): NetSpec {
  const init = net?.init ?? NetInit.NET_INIT_UNSPECIFIED;
  return {
    kind: netKindFromProto(net?.kind ?? NetKind.NET_KIND_UNSPECIFIED),
    width: net?.width ?? 1,
    dropout: net?.dropout ?? 0.5,
    ...(net?.lrn === undefined ? {} : { lrn: net.lrn }),
    init: init === NetInit.NET_INIT_UNSPECIFIED ? 'he' : fromTable(INITS_BACK, init, `${field}.init`),
  };
}

type Augment = TrainingSpec['augment'];

function augmentToProto(augment: Augment): NonNullable<Training['augment']> {
  return augment === false ? { disabled: true, crop: 0, mirror: false } : { disabled: false, ...augment };
}

function augmentFromProto(augment: NonNullable<Training['augment']>): Augment {
  return augment.disabled ? false : { crop: augment.crop, mirror: augment.mirror };
}

/** Any subset of the hyper-parameters (a spec's `training` or `base`, or a cell's effective values). */
export function trainingToProto(training: Partial<TrainingSpec>): Training {
  return {
    batchSize: training.batchSize,
    learningRate: training.learningRate,
    momentum: training.momentum,
    weightDecay: training.weightDecay,
    schedule: training.schedule && { ...training.schedule },
    maxEpochs: training.maxEpochs,
    patience: training.patience,
    minEpochs: training.minEpochs,
    checkpointEveryEpochs: training.checkpointEveryEpochs,
    augment: training.augment === undefined ? undefined : augmentToProto(training.augment),
    scoreTopK: training.scoreTopK,
  };
}

/** The fields that are set, and only those: a spec's `training` or `base` before validation. */
export function trainingOverridesFromProto(training: Training | undefined): Partial<TrainingSpec> {
  if (!training) return {};
  const all: Partial<TrainingSpec> = {
    batchSize: training.batchSize,
    learningRate: training.learningRate,
    momentum: training.momentum,
    weightDecay: training.weightDecay,
    schedule: training.schedule && { ...training.schedule },
    maxEpochs: training.maxEpochs,
    patience: training.patience,
    minEpochs: training.minEpochs,
    checkpointEveryEpochs: training.checkpointEveryEpochs,
    augment: training.augment && augmentFromProto(training.augment),
    scoreTopK: training.scoreTopK,
  };
  return Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined)) as Partial<TrainingSpec>;
}

/** A cell's effective hyper-parameters: unset fields take the spec's defaults. */
export function trainingFromProto(training: Training | undefined): TrainingSpec {
  return {
    ...TRAINING_DEFAULTS,
    schedule: { ...TRAINING_DEFAULTS.schedule },
    augment: { ...TRAINING_DEFAULTS.augment },
    ...trainingOverridesFromProto(training),
  };
}

// ---------------------------------------------------------------------------------------
// Cells.

/** What the controller knows about a cell beyond its definition. */
export interface CellExtra {
  state?: CellState;
  attempts?: number;
  error?: string;
  status?: string;
  progress?: Progress;
  result?: CellResult;
}

export function cellToProto(cell: DomainCell, extra: CellExtra = {}): Cell {
  return {
    id: cell.id,
    name: cell.name,
    arm: armToProto(cell.arm),
    kind: cellKindToProto(cell.kind),
    seed: cell.seed,
    splitId: cell.splitId,
    target: halfToProto(cell.target),
    source: halfToProto(cell.source),
    n: cell.n,
    mode: transferModeToProto(cell.mode),
    sourceCellId: cell.sourceCellId ?? '',
    net: netToProto(cell.net),
    training: trainingToProto(cell.training),
    deps: [...cell.deps],
    implicit: cell.implicit === true,
    state: extra.state ?? CellState.CELL_STATE_UNSPECIFIED,
    attempts: extra.attempts ?? 0,
    error: extra.error ?? '',
    status: extra.status ?? '',
    progress: extra.progress,
    result: extra.result,
    replica: cell.replica ?? 0,
    measure: cell.measure && { ...cell.measure },
  };
}

/** The cell id a request names; throws when the request has no cell or the cell no id. */
export function cellIdFromProto(cell: Pick<Cell, 'id'> | undefined, field = 'cell'): string {
  if (!cell) throw new MapperError(field, 'is required');
  if (!cell.id) throw new MapperError(`${field}.id`, 'is required');
  return cell.id;
}

/**
 * The domain cell a message describes. Services should prefer the cell the controller stored
 * (`cells/<id>/cell.json`) and check the message against it with cellMismatches.
 */
export function cellFromProto(cell: Cell): DomainCell {
  const id = cellIdFromProto(cell, 'cell');
  const domain: DomainCell = {
    id,
    name: cell.name,
    arm: armFromProto(cell.arm, 'cell.arm'),
    kind: cellKindFromProto(cell.kind, 'cell.kind'),
    seed: cell.seed,
    splitId: cell.splitId,
    target: halfFromProto(cell.target, 'cell.target'),
    net: netFromProto(cell.net),
    training: trainingFromProto(cell.training),
    deps: [...cell.deps],
  };
  const source = optionalHalfFromProto(cell.source, 'cell.source');
  const mode = transferModeFromProto(cell.mode, 'cell.mode');
  if (source !== undefined) domain.source = source;
  if (cell.n !== undefined) domain.n = cell.n;
  if (mode !== undefined) domain.mode = mode;
  if (cell.sourceCellId) domain.sourceCellId = cell.sourceCellId;
  if (cell.implicit) domain.implicit = true;
  if (cell.replica) domain.replica = cell.replica;
  if (cell.measure) domain.measure = { ...cell.measure };
  return domain;
}

/**
 * The fields where a request's cell contradicts the stored one, as `cell.<field> is X, the
 * stored cell has Y` lines. Fields the request leaves unset (proto defaults) are not compared:
 * a caller may send just the id.
 */
export function cellMismatches(stored: DomainCell, requested: Cell): string[] {
  const expected = cellToProto(stored);
  const problems: string[] = [];
  const compare = (field: string, given: unknown, want: unknown, unset: unknown): void => {
    if (given === unset || given === undefined) return;
    if (JSON.stringify(given) !== JSON.stringify(want)) {
      problems.push(`cell.${field} is ${JSON.stringify(given)}, the stored cell has ${JSON.stringify(want)}`);
    }
  };
  compare('name', requested.name, expected.name, '');
  compare('arm', requested.arm, expected.arm, Arm.ARM_UNSPECIFIED);
  compare('kind', requested.kind, expected.kind, CellKind.CELL_KIND_UNSPECIFIED);
  compare('seed', requested.seed, expected.seed, 0);
  compare('split_id', requested.splitId, expected.splitId, '');
  compare('target', requested.target, expected.target, Half.HALF_UNSPECIFIED);
  compare('source', requested.source, expected.source, Half.HALF_UNSPECIFIED);
  compare('n', requested.n, expected.n, undefined);
  compare('mode', requested.mode, expected.mode, TransferMode.TRANSFER_MODE_UNSPECIFIED);
  compare('source_cell_id', requested.sourceCellId, expected.sourceCellId, '');
  if (requested.net) {
    const net = requested.net;
    compare('net.kind', net.kind, expected.net?.kind, NetKind.NET_KIND_UNSPECIFIED);
    compare('net.width', net.width, expected.net?.width, undefined);
    compare('net.dropout', net.dropout, expected.net?.dropout, undefined);
  }
  if (requested.training) {
    const given = trainingToProto(trainingOverridesFromProto(requested.training));
    const want = expected.training ?? {};
    for (const key of Object.keys(given) as (keyof Training)[]) {
      compare(`training.${snake(key)}`, given[key], want[key], undefined);
    }
  }
  return problems;
}

function snake(name: string): string {
  return name.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`);
}

// ---------------------------------------------------------------------------------------
// Progress.

/** The runner's progress report (train-cell.ts's CellProgress): epoch and batch count from 1. */
export interface ProgressReport {
  phase: ProgressPhase;
  epoch?: number;
  maxEpochs?: number;
  batch?: number;
  batchesPerEpoch?: number;
  loss?: number;
  valTop1?: number;
  imagesPerSecond?: number;
  epochDone?: boolean;
}

/**
 * A runner progress report as the proto's Progress. The runner counts epochs and batches from
 * 1 ("epoch 3 of 10"); the proto from 0, with `step` the optimizer steps taken so far.
 */
export function progressToProto(cellId: string, progress: ProgressReport, time: Date = new Date()): Progress {
  const epoch = Math.max(0, (progress.epoch ?? 1) - 1);
  const batch = Math.max(0, (progress.batch ?? 1) - 1);
  const batchesPerEpoch = progress.batchesPerEpoch ?? 0;
  const step = progress.epoch === undefined ? 0 : epoch * batchesPerEpoch + (progress.batch ?? 0);
  return {
    cellId,
    phase: phaseToProto(progress.phase),
    epoch,
    maxEpochs: progress.maxEpochs ?? 0,
    step,
    batch,
    batchesPerEpoch,
    loss: progress.loss,
    valTop1: progress.valTop1,
    imagesPerSecond: progress.imagesPerSecond,
    epochDone: progress.epochDone === true,
    time,
  };
}

/** The inverse of progressToProto, for clients that render runner-style reports. */
export function progressFromProto(progress: Progress): ProgressReport {
  const report: ProgressReport = { phase: phaseFromProto(progress.phase, 'progress.phase') };
  if (progress.maxEpochs > 0) {
    report.epoch = progress.epoch + 1;
    report.maxEpochs = progress.maxEpochs;
  }
  if (progress.batchesPerEpoch > 0) {
    report.batch = progress.batch + 1;
    report.batchesPerEpoch = progress.batchesPerEpoch;
  }
  if (progress.loss !== undefined) report.loss = progress.loss;
  if (progress.valTop1 !== undefined) report.valTop1 = progress.valTop1;
  if (progress.imagesPerSecond !== undefined) report.imagesPerSecond = progress.imagesPerSecond;
  if (progress.epochDone) report.epochDone = true;
  return report;
}

// ---------------------------------------------------------------------------------------
// Results.

/** A result as the runner stores it (`cells/<id>/result.json`). */
export type ResultRecord = DomainCellResult & { peakRssBytes?: number };

export function cellResultToProto(result: ResultRecord, extra: { finalCheckpoint?: CheckpointRef } = {}): CellResult {
  return {
    cellId: result.cellId,
    name: result.name,
    arm: armToProto(result.arm),
    kind: cellKindToProto(result.kind),
    n: result.n,
    seed: result.seed,
    target: halfToProto(result.target),
    score: result.score,
    valScore: result.valScore,
    valTop1History: [...result.valTop1History],
    testTop1: result.testTop1,
    testTop5: result.testTop5,
    perClass: { ...result.perClass },
    epochs: result.epochs,
    stoppedBy: stoppedByToProto(result.stoppedBy),
    stillImproving: result.stillImproving,
    seconds: result.seconds,
    imagesPerSecond: result.imagesPerSecond,
    backend: result.backend ?? '',
    finalCheckpoint: extra.finalCheckpoint,
    peakRssBytes: result.peakRssBytes,
    measures: (result.measures ?? []).map((measure) => ({ ...measure })),
    prefixCache: result.prefixCache ? { ...result.prefixCache } : undefined,
  };
}

export function cellResultFromProto(result: CellResult): ResultRecord {
  const domain: ResultRecord = {
    cellId: result.cellId,
    name: result.name,
    arm: armFromProto(result.arm, 'result.arm'),
    kind: cellKindFromProto(result.kind, 'result.kind'),
    seed: result.seed,
    target: halfFromProto(result.target, 'result.target'),
    score: result.score,
    valTop1History: [...result.valTop1History],
    epochs: result.epochs,
    stoppedBy: stoppedByFromProto(result.stoppedBy, 'result.stopped_by'),
    stillImproving: result.stillImproving,
    seconds: result.seconds,
  };
  if (result.n !== undefined) domain.n = result.n;
  if (result.valScore !== undefined) domain.valScore = result.valScore;
  if (result.testTop1 !== undefined) domain.testTop1 = result.testTop1;
  if (result.testTop5 !== undefined) domain.testTop5 = result.testTop5;
  if (Object.keys(result.perClass).length > 0) domain.perClass = { ...result.perClass };
  if (result.imagesPerSecond !== undefined) domain.imagesPerSecond = result.imagesPerSecond;
  if (result.backend) domain.backend = result.backend;
  if (result.peakRssBytes !== undefined) domain.peakRssBytes = result.peakRssBytes;
  if (result.measures.length > 0)
    domain.measures = result.measures.map((measure) => ({
      ...measure,
      ckaMethod: measure.ckaMethod === 'minibatch' ? 'minibatch' : 'full',
    }));
  if (result.prefixCache) {
    const { mode, layer, bytes, reason } = result.prefixCache;
    if (mode !== 'uncached' && mode !== 'exact' && mode !== 'views')
      throw new MapperError('result.prefix_cache.mode', `'${mode}' is not one of uncached, exact, views`);
    domain.prefixCache = {
      mode,
      ...(layer !== undefined ? { layer } : {}),
      ...(bytes !== undefined ? { bytes } : {}),
      ...(reason !== undefined ? { reason } : {}),
    };
  }
  return domain;
}

// ---------------------------------------------------------------------------------------
// Datasets, split settings and splits.

export function datasetToProto(dataset: SweepDataset): Dataset {
  switch (dataset.kind) {
    case 'mnist':
      return { kind: { $case: 'mnist', value: {} } };
    case 'idx':
      return {
        kind: {
          $case: 'idx',
          value: {
            trainImages: dataset.trainImages,
            trainLabels: dataset.trainLabels,
            testImages: dataset.testImages,
            testLabels: dataset.testLabels,
            classes: [...(dataset.classes ?? [])],
          },
        },
      };
    case 'cifar10':
      return { kind: { $case: 'cifar10', value: { path: dataset.path } } };
    case 'cifar100':
      return {
        kind: {
          $case: 'cifar100',
          value: {
            path: dataset.path,
            labels:
              dataset.labels === 'coarse' ? Cifar100Labels.CIFAR100_LABELS_COARSE : Cifar100Labels.CIFAR100_LABELS_FINE,
          },
        },
      };
    case 'catalog':
      return { kind: { $case: 'catalog', value: { name: dataset.name } } };
    case 'image-folder':
      return {
        kind: {
          $case: 'imageFolder',
          value: {
            path: dataset.path,
            train: dataset.train,
            test: dataset.test,
            imageSize: dataset.imageSize && { height: dataset.imageSize[0], width: dataset.imageSize[1] },
            channels: dataset.channels,
            limitPerClass: dataset.limitPerClass,
          },
        },
      };
  }
}

function dropUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as T;
}

/**
 * The spec's `dataset` a message describes, with the spec's defaults applied where the proto
 * says so (CIFAR-100's FINE labels). Values are not validated here: pass the result through
 * validateSpec for the spec's checks and messages.
 */
export function datasetFromProto(dataset: Dataset | undefined, field = 'dataset'): SweepDataset {
  const kind = dataset?.kind;
  if (!kind)
    throw new MapperError(field, 'is required: set one of mnist, idx, cifar10, cifar100, image_folder, catalog');
  switch (kind.$case) {
    case 'mnist':
      return { kind: 'mnist' };
    case 'catalog':
      // The name is checked by validateSpec, with the list of catalog names in its message.
      return { kind: 'catalog', name: kind.value.name as Extract<SweepDataset, { kind: 'catalog' }>['name'] };
    case 'idx':
      return dropUndefined({
        kind: 'idx' as const,
        trainImages: kind.value.trainImages,
        trainLabels: kind.value.trainLabels,
        testImages: kind.value.testImages,
        testLabels: kind.value.testLabels,
        classes: kind.value.classes.length > 0 ? [...kind.value.classes] : undefined,
      });
    case 'cifar10':
      return { kind: 'cifar10', path: kind.value.path };
    case 'cifar100':
      if (
        kind.value.labels !== Cifar100Labels.CIFAR100_LABELS_UNSPECIFIED &&
        kind.value.labels !== Cifar100Labels.CIFAR100_LABELS_FINE &&
        kind.value.labels !== Cifar100Labels.CIFAR100_LABELS_COARSE
      ) {
        throw new MapperError(`${field}.cifar100.labels`, `${kind.value.labels} has no meaning here`);
      }
      return {
        kind: 'cifar100',
        path: kind.value.path,
        labels: kind.value.labels === Cifar100Labels.CIFAR100_LABELS_COARSE ? 'coarse' : 'fine',
      };
    case 'imageFolder': {
      const size = kind.value.imageSize;
      return dropUndefined({
        kind: 'image-folder' as const,
        path: kind.value.path,
        train: kind.value.train,
        test: kind.value.test,
        imageSize: size && ([size.height, size.width] as [number, number]),
        channels: kind.value.channels as 1 | 3 | undefined,
        limitPerClass: kind.value.limitPerClass,
      });
    }
  }
}

/** Every path a dataset names, by its proto field path: what a server must resolve or check. */
export function datasetPaths(dataset: SweepDataset, field = 'dataset'): { field: string; path: string }[] {
  switch (dataset.kind) {
    case 'mnist':
    case 'catalog':
      return [];
    case 'idx':
      return [
        { field: `${field}.idx.train_images`, path: dataset.trainImages },
        { field: `${field}.idx.train_labels`, path: dataset.trainLabels },
        ...(dataset.testImages === undefined ? [] : [{ field: `${field}.idx.test_images`, path: dataset.testImages }]),
        ...(dataset.testLabels === undefined ? [] : [{ field: `${field}.idx.test_labels`, path: dataset.testLabels }]),
      ];
    case 'cifar10':
      return [{ field: `${field}.cifar10.path`, path: dataset.path }];
    case 'cifar100':
      return [{ field: `${field}.cifar100.path`, path: dataset.path }];
    case 'image-folder':
      return [{ field: `${field}.image_folder.path`, path: dataset.path }];
  }
}

function classRefToProto(ref: string | number): ClassRef {
  return { ref: typeof ref === 'number' ? { $case: 'index', value: ref } : { $case: 'name', value: ref } };
}

function classRefFromProto(ref: ClassRef, field: string): string | number {
  if (!ref.ref) throw new MapperError(field, 'set name or index');
  return ref.ref.value;
}

export function splitSettingsToProto(split: Partial<SweepSplit>): SplitSettings {
  return {
    kind:
      split.kind === undefined
        ? SplitKind.SPLIT_KIND_UNSPECIFIED
        : split.kind === 'groups'
          ? SplitKind.SPLIT_KIND_GROUPS
          : SplitKind.SPLIT_KIND_RANDOM,
    groups: split.groups && {
      a: (split.groups.A ?? []).map(classRefToProto),
      b: (split.groups.B ?? []).map(classRefToProto),
    },
    groupsFile: split.groupsFile,
    trainPerClass: split.trainPerClass,
    valPerClass: split.valPerClass,
    testPerClass: split.testPerClass,
  };
}

/**
 * The spec's `split` a message describes, with the spec's defaults (kind random, 50
 * validation images per class), so that it hashes to the same split id as the spec would.
 */
export function splitSettingsFromProto(settings: SplitSettings | undefined, field = 'settings'): SweepSplit {
  const kind = settings?.kind ?? SplitKind.SPLIT_KIND_UNSPECIFIED;
  if (
    kind !== SplitKind.SPLIT_KIND_UNSPECIFIED &&
    kind !== SplitKind.SPLIT_KIND_RANDOM &&
    kind !== SplitKind.SPLIT_KIND_GROUPS
  ) {
    throw new MapperError(`${field}.kind`, `${kind} has no meaning here`);
  }
  const groups = settings?.groups;
  return dropUndefined({
    kind: kind === SplitKind.SPLIT_KIND_GROUPS ? ('groups' as const) : ('random' as const),
    groups: groups && {
      A: groups.a.length > 0 ? groups.a.map((ref, i) => classRefFromProto(ref, `${field}.groups.a[${i}]`)) : undefined,
      B: groups.b.length > 0 ? groups.b.map((ref, i) => classRefFromProto(ref, `${field}.groups.b[${i}]`)) : undefined,
    },
    groupsFile: settings?.groupsFile,
    trainPerClass: settings?.trainPerClass,
    valPerClass: settings?.valPerClass ?? 50,
    testPerClass: settings?.testPerClass,
  });
}

/** A split task as a CreateSplit request's fields (the request's `wait` and expected id aside). */
export function splitTaskToProto(task: SplitTask): { dataset: Dataset; settings: SplitSettings; seed: number } {
  return { dataset: datasetToProto(task.dataset), settings: splitSettingsToProto(task.split), seed: task.seed };
}

/** What splitManifestToProto needs of a stored split manifest (`@transferlab/data`'s SplitManifest). */
export interface SplitManifestLike {
  splitId: string;
  shape: readonly [number, number, number] | readonly number[];
  halves: Record<
    DomainHalf,
    { classes: readonly string[]; subsets: Record<'train' | 'val' | 'test', { count: number }> }
  >;
}

/**
 * A READY split from its stored manifest; `task` (when known) fills in the inputs, which the
 * manifest does not keep in the proto's form.
 */
export function splitManifestToProto(
  manifest: SplitManifestLike,
  options: { task?: Omit<SplitTask, 'id'>; manifestKey?: string; updatedAt?: Date } = {},
): Split {
  const { task } = options;
  const [height = 0, width = 0, channels = 0] = manifest.shape;
  return {
    id: manifest.splitId,
    seed: task?.seed ?? 0,
    dataset: task && datasetToProto(task.dataset),
    settings: task && splitSettingsToProto(task.split),
    state: SplitState.SPLIT_STATE_READY,
    manifestKey: options.manifestKey ?? `splits/${manifest.splitId}/manifest.json`,
    imageShape: { height, width, channels },
    halves: (['A', 'B'] as const).map((half) => {
      const { classes, subsets } = manifest.halves[half];
      return {
        half: halfToProto(half),
        classes: [...classes],
        trainCount: subsets.train.count,
        valCount: subsets.val.count,
        testCount: subsets.test.count,
      };
    }),
    error: '',
    createdAt: undefined,
    updatedAt: options.updatedAt,
  };
}

// ---------------------------------------------------------------------------------------
// Sweep specs.

export function sweepSpecToProto(spec: SweepSpecInput): SweepSpec {
  return {
    name: spec.name,
    dataset: datasetToProto(spec.dataset as SweepDataset),
    split: spec.split && splitSettingsToProto(spec.split as Partial<SweepSplit>),
    net: spec.net && {
      kind: spec.net.kind === undefined ? NetKind.NET_KIND_UNSPECIFIED : netKindToProto(spec.net.kind),
      width: spec.net.width,
      dropout: spec.net.dropout,
      lrn: spec.net.lrn,
      init: spec.net.init === undefined ? NetInit.NET_INIT_UNSPECIFIED : INITS[spec.net.init],
    },
    training: spec.training && trainingToProto(spec.training as Partial<TrainingSpec>),
    base: spec.base && trainingToProto(spec.base as Partial<TrainingSpec>),
    layers: [...(spec.layers ?? [])],
    arms: (spec.arms ?? []).map((arm) => armToProto(arm)),
    repeats: spec.repeats,
    concurrency: typeof spec.concurrency === 'number' ? spec.concurrency : 0,
    measures: spec.measures && {
      examples: spec.measures.examples,
      maxFeatures: spec.measures.maxFeatures,
      batch: spec.measures.batch,
      only: spec.measures.only === true,
    },
  };
}

/**
 * A structured spec as the input validateSpec takes: fields the message leaves unset stay
 * unset, so the spec's defaults and checks apply exactly as for a spec file.
 */
export function sweepSpecFromProto(spec: SweepSpec): SweepSpecInput {
  const input: Record<string, unknown> = { name: spec.name };
  if (spec.dataset) input.dataset = datasetFromProto(spec.dataset, 'dataset');
  if (spec.split) {
    const split = splitSettingsFromProto(spec.split, 'split');
    // Keep the spec's own default for valPerClass: only a value the message sets is passed on.
    if (spec.split.valPerClass === undefined) delete (split as Partial<SweepSplit>).valPerClass;
    input.split = split;
  }
  if (spec.net) {
    input.net = dropUndefined({
      kind: spec.net.kind === NetKind.NET_KIND_UNSPECIFIED ? undefined : netKindFromProto(spec.net.kind),
      width: spec.net.width,
      dropout: spec.net.dropout,
      lrn: spec.net.lrn,
      init:
        spec.net.init === NetInit.NET_INIT_UNSPECIFIED ? undefined : fromTable(INITS_BACK, spec.net.init, 'net.init'),
    });
  }
  if (spec.training) input.training = trainingOverridesFromProto(spec.training);
  if (spec.base) input.base = trainingOverridesFromProto(spec.base);
  if (spec.layers.length > 0) input.layers = [...spec.layers];
  if (spec.arms.length > 0) {
    input.arms = spec.arms.map((arm, i) => armFromProto(arm, `arms[${i}]`));
  }
  if (spec.repeats !== undefined) input.repeats = spec.repeats;
  if (spec.concurrency > 0) input.concurrency = spec.concurrency;
  if (spec.measures) {
    input.measures = dropUndefined({
      examples: spec.measures.examples,
      maxFeatures: spec.measures.maxFeatures,
      batch: spec.measures.batch,
      only: spec.measures.only || undefined,
    });
  }
  return input as SweepSpecInput;
}

import * as tf from '@tensorflow/tfjs-core';
import type { Cell, CellResult, PrefixCacheUse } from '@transferlab/experiment';
import {
  type EpochRecord,
  isTrainCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
  selectBackend,
  train,
} from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { loadSubsets, planPrefixCache, prefixCacheBudget, trainData, trainFeatures } from './cell-data.ts';
import { cellKeys, getJson, putJson } from './cell-store.ts';
import { initialNet } from './transplant-cell.ts';

/** What a cell reports while it runs; the CLI draws it as a bar, the trainer publishes it. */
export interface CellProgress {
  phase: 'preparing' | 'training' | 'evaluating';
  epoch?: number;
  maxEpochs?: number;
  batch?: number;
  batchesPerEpoch?: number;
  loss?: number;
  valTop1?: number;
  imagesPerSecond?: number;
  /** Set on the report that closes an epoch, after its validation. */
  epochDone?: boolean;
  /** On the report that closes an epoch: the epoch's time in seconds, its validation included. */
  epochSeconds?: number;
}

export interface TrainCellOptions {
  signal?: AbortSignal;
  progress?: (progress: CellProgress) => void;
  log?: (message: string, fields?: Record<string, unknown>) => void;
  /** Bound on the frozen-prefix cache in bytes; default TRANSFERLAB_PREFIX_CACHE_BYTES, else 1 GiB. 0: never cache. */
  prefixCacheBytes?: number;
  /** After each checkpoint is stored (resumable ones and the final net): its size and time (telemetry). */
  onCheckpoint?: (info: { bytes: number; seconds: number; final: boolean }) => void;
}

/** How a cell's training went: stored beside its trained net, read by the evaluator. */
export interface TrainingOutcome {
  cellId: string;
  history: EpochRecord[];
  epochs: number;
  stoppedBy: CellResult['stoppedBy'];
  imagesPerSecond: number;
  seconds: number;
  backend: string;
  peakRssBytes: number;
  /** Whether the frozen layers ran every step or once per image (and view); absent before caching existed. */
  prefixCache?: PrefixCacheUse & { seconds?: number };
}

const STOP_REASONS: Record<'patience' | 'budget', CellResult['stoppedBy']> = {
  patience: 'plateau',
  budget: 'max-epochs',
};

export async function readTrainingOutcome(store: ObjectStore, cellId: string): Promise<TrainingOutcome | undefined> {
  return getJson<TrainingOutcome>(store, cellKeys.training(cellId));
}

/**
 * The trainer's work: trains a cell from its initial net (or resumes from its checkpoint),
 * checkpointing as it goes, and stores the trained net and how training went. Returns
 * undefined when interrupted: the checkpoint is kept and the next call resumes from it.
 */
export async function trainCell(
  store: ObjectStore,
  cell: Cell,
  options: TrainCellOptions = {},
): Promise<TrainingOutcome | undefined> {
  const done = await readTrainingOutcome(store, cell.id);
  if (done && (await loadCheckpoint(store, cellKeys.final(cell.id)))) return done;
  const started = Date.now();
  options.progress?.({ phase: 'preparing' });
  const backend = await selectBackend({ log: options.log });
  await putJson(store, cellKeys.cell(cell.id), cell);
  const [trainSet, valSet] = await loadSubsets(store, cell, ['train', 'val']);
  const model = await initialNet(store, cell);
  // Frozen-prefix caching: the frozen layers' outputs once per image (and fixed view), when
  // nothing random runs below the cut and they fit the budget. The weights come out the same.
  const plan = planPrefixCache(
    model,
    cell,
    { train: trainSet!.count, val: valSet!.count },
    options.prefixCacheBytes ?? prefixCacheBudget(),
  );
  let prefixCache: TrainingOutcome['prefixCache'] = plan.use;
  let cache: ReturnType<typeof trainFeatures> | undefined;
  if ('cut' in plan) {
    const begun = performance.now();
    cache = trainFeatures(model, cell, trainSet!, plan);
    prefixCache = { ...plan.use, seconds: (performance.now() - begun) / 1000 };
  }
  options.log?.('frozen-prefix cache', { cell: cell.name, ...prefixCache });
  const data = trainData(cell, trainSet!, valSet!, cache);
  const { training } = cell;
  // Every checkpoint goes through here, so its size and time reach the telemetry hook.
  const storeCheckpoint = async (prefix: string, checkpoint: Parameters<typeof saveCheckpoint>[2], final: boolean) => {
    const begun = performance.now();
    // The rolling checkpoint keeps the one before it: a damaged latest one costs one interval.
    const manifest = await saveCheckpoint(store, prefix, checkpoint, { keepPrevious: !final });
    const bytes = manifest.objects.reduce((sum, object) => sum + object.size, 0);
    options.onCheckpoint?.({ bytes, seconds: (performance.now() - begun) / 1000, final });
  };
  try {
    const saved = await loadCheckpoint(store, cellKeys.checkpoint(cell.id), {
      onRejected: (error) =>
        options.log?.('checkpoint rejected, resuming from the previous one', { cell: cell.name, error: error.message }),
    });
    const resume = saved && isTrainCheckpoint(saved) ? saved : undefined;
    if (resume) options.log?.('resuming from checkpoint', { cell: cell.name, epoch: resume.state.epoch });

    let lastValTop1: number | undefined;
    let lastImagesPerSecond: number | undefined;
    const report = (fields: Partial<CellProgress>): void =>
      options.progress?.({
        phase: 'training',
        maxEpochs: training.maxEpochs,
        batchesPerEpoch: data.batchesPerEpoch,
        valTop1: lastValTop1,
        ...fields,
      });
    const result = await train(model, data, {
      learningRate: training.learningRate,
      momentum: training.momentum,
      weightDecay: training.weightDecay,
      schedule: training.schedule,
      maxEpochs: training.maxEpochs,
      patience: training.patience,
      minEpochs: training.minEpochs,
      checkpointEveryEpochs: training.checkpointEveryEpochs,
      saveCheckpoint: (checkpoint) => storeCheckpoint(cellKeys.checkpoint(cell.id), checkpoint, false),
      resume,
      signal: options.signal,
      onStep: (step) => {
        lastImagesPerSecond = step.imagesPerSecond;
        report({
          epoch: step.epoch + 1,
          batch: step.batch + 1,
          loss: step.loss,
          imagesPerSecond: step.imagesPerSecond,
        });
      },
      onEpoch: (record) => {
        lastValTop1 = record.valTop1;
        report({
          epoch: record.epoch + 1,
          batch: data.batchesPerEpoch,
          loss: record.loss,
          imagesPerSecond: lastImagesPerSecond,
          epochDone: true,
          epochSeconds: record.seconds,
        });
      },
    });
    if (result.stoppedBy === 'interrupted') return undefined;

    // The trained net first, then the outcome that points at it: a crash between leaves a cell
    // that trains again from its final checkpoint, never an outcome without a net.
    await storeCheckpoint(cellKeys.final(cell.id), { model }, true);
    const outcome: TrainingOutcome = {
      cellId: cell.id,
      history: result.history,
      epochs: result.epochs,
      stoppedBy: STOP_REASONS[result.stoppedBy],
      imagesPerSecond: result.imagesPerSecond,
      seconds: (Date.now() - started) / 1000,
      backend: backend.name,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      prefixCache,
    };
    await putJson(store, cellKeys.training(cell.id), outcome);
    return outcome;
  } finally {
    model.dispose();
    tf.disposeVariables();
  }
}

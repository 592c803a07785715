import * as tf from '@tensorflow/tfjs-core';
import { batchesPerEpoch, deriveSeed, makeBatches, openSplit } from '@transferlab/data';
import type { Cell, CellResult } from '@transferlab/experiment';
import { paperScore } from '@transferlab/experiment';
import {
  type TrainResult,
  buildNet,
  disposeNamedWeights,
  evaluate,
  isTrainCheckpoint,
  loadCheckpoint,
  namedWeightsFromCheckpoint,
  saveCheckpoint,
  selectBackend,
  train,
  transplant,
} from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { cellKeys } from './cell-store.ts';

/** What a cell reports while it runs; the CLI draws it as a bar. */
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
}

export interface RunCellOptions {
  signal?: AbortSignal;
  progress?: (progress: CellProgress) => void;
  log?: (message: string, fields?: Record<string, unknown>) => void;
}

/** A cell's result as stored, with what only a run knows (backend, memory). */
export type StoredResult = CellResult & { peakRssBytes?: number; testPerClass?: number[] };

export async function readResult(store: ObjectStore, cellId: string): Promise<StoredResult | undefined> {
  if (!(await store.stat(cellKeys.result(cellId)))) return undefined;
  return JSON.parse((await store.get(cellKeys.result(cellId))).toString('utf8')) as StoredResult;
}

const STOP_REASONS: Record<'patience' | 'budget', CellResult['stoppedBy']> = {
  patience: 'plateau',
  budget: 'max-epochs',
};

/**
 * Runs one cell to its result: the program a worker process (and, on a cluster, a trainer pod)
 * runs. It builds the net, takes its first n layers from the source cell's trained net (or keeps
 * them random), resumes from the cell's checkpoint when one exists, trains, evaluates on the test
 * set and stores the result last. Returns undefined when interrupted (the checkpoint is kept).
 */
export async function runCell(
  store: ObjectStore,
  cell: Cell,
  options: RunCellOptions = {},
): Promise<StoredResult | undefined> {
  const existing = await readResult(store, cell.id);
  if (existing) return existing;
  const started = Date.now();
  options.progress?.({ phase: 'preparing' });
  const backend = await selectBackend({ log: options.log });
  await store.put(cellKeys.cell(cell.id), new TextEncoder().encode(JSON.stringify(cell, null, 2)));

  // Data: the target half of the cell's split.
  const split = await openSplit(store, cell.splitId);
  const [trainSet, valSet, testSet] = await Promise.all([
    split.loadSubset(cell.target, 'train'),
    split.loadSubset(cell.target, 'val'),
    split.loadSubset(cell.target, 'test'),
  ]);
  const { training } = cell;
  const orderSeed = deriveSeed(cell.seed, 'data-order', cell.id);
  const data = {
    batches: (epoch: number, startBatch: number) =>
      makeBatches(trainSet, {
        batchSize: training.batchSize,
        seed: orderSeed,
        epoch,
        startBatch,
        augment: training.augment === false ? undefined : training.augment,
        dropLast: false,
      }),
    batchesPerEpoch: batchesPerEpoch(trainSet.count, training.batchSize, false),
    val: { images: valSet.pixels, labels: valSet.labels, count: valSet.count },
  };

  // Model: fresh from the cell's seed; then its first n layers from the source, or random and frozen.
  const model = buildNet(
    { kind: cell.net.kind, width: cell.net.width, dropout: cell.net.dropout },
    { inputShape: trainSet.shape, numClasses: trainSet.classes.length, seed: cell.seed },
  );
  try {
    if (cell.kind === 'transfer') {
      if (!cell.sourceCellId || cell.n === undefined || !cell.mode) {
        throw new Error(`cell ${cell.name} (${cell.id}) is a transfer cell without a source cell, n or mode`);
      }
      const source = await loadCheckpoint(store, cellKeys.final(cell.sourceCellId));
      if (!source) {
        throw new Error(
          `cell ${cell.name} needs the trained net of its source cell ${cell.sourceCellId}, ` +
            `but ${store.describe(cellKeys.final(cell.sourceCellId))} holds no checkpoint`,
        );
      }
      const weights = namedWeightsFromCheckpoint(source);
      try {
        transplant(weights, model, { n: cell.n, mode: cell.mode });
      } finally {
        disposeNamedWeights(weights);
      }
    } else if (cell.kind === 'random') {
      transplant(null, model, { n: cell.n ?? 0, mode: 'random' });
    }

    const saved = await loadCheckpoint(store, cellKeys.checkpoint(cell.id));
    const resume = saved && isTrainCheckpoint(saved) ? saved : undefined;
    if (resume) options.log?.('resuming from checkpoint', { cell: cell.name, epoch: resume.state.epoch });

    // Train.
    let lastValTop1: number | undefined;
    let lastImagesPerSecond: number | undefined;
    const result: TrainResult = await train(model, data, {
      learningRate: training.learningRate,
      momentum: training.momentum,
      weightDecay: training.weightDecay,
      schedule: training.schedule,
      maxEpochs: training.maxEpochs,
      patience: training.patience,
      minEpochs: training.minEpochs,
      checkpointEveryEpochs: training.checkpointEveryEpochs,
      saveCheckpoint: async (checkpoint) => {
        await saveCheckpoint(store, cellKeys.checkpoint(cell.id), checkpoint);
      },
      resume,
      signal: options.signal,
      onStep: (step) => {
        lastImagesPerSecond = step.imagesPerSecond;
        options.progress?.({
          phase: 'training',
          epoch: step.epoch + 1,
          maxEpochs: training.maxEpochs,
          batch: step.batch + 1,
          batchesPerEpoch: data.batchesPerEpoch,
          loss: step.loss,
          valTop1: lastValTop1,
          imagesPerSecond: step.imagesPerSecond,
        });
      },
      onEpoch: (record) => {
        lastValTop1 = record.valTop1;
        options.progress?.({
          phase: 'training',
          epoch: record.epoch + 1,
          maxEpochs: training.maxEpochs,
          batch: data.batchesPerEpoch,
          batchesPerEpoch: data.batchesPerEpoch,
          loss: record.loss,
          valTop1: record.valTop1,
          imagesPerSecond: lastImagesPerSecond,
          epochDone: true,
        });
      },
    });
    if (result.stoppedBy === 'interrupted') return undefined;

    // Evaluate, keep the trained net for the cells that copy from it, then the result, last.
    options.progress?.({ phase: 'evaluating' });
    const test = evaluate(model, { images: testSet.pixels, labels: testSet.labels, count: testSet.count });
    await saveCheckpoint(store, cellKeys.final(cell.id), { model });
    const valTop1History = result.history.map((record) => record.valTop1);
    const stored: StoredResult = {
      cellId: cell.id,
      name: cell.name,
      arm: cell.arm,
      kind: cell.kind,
      n: cell.n,
      seed: cell.seed,
      target: cell.target,
      score: paperScore(valTop1History, training.scoreTopK),
      valTop1History,
      testTop1: test.top1,
      testTop5: test.top5,
      perClass: Object.fromEntries(trainSet.classes.map((name, index) => [name, test.perClass[index] ?? NaN])),
      epochs: result.epochs,
      stoppedBy: STOP_REASONS[result.stoppedBy],
      stillImproving: result.stillImproving,
      seconds: (Date.now() - started) / 1000,
      imagesPerSecond: result.imagesPerSecond,
      backend: backend.name,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
    await store.put(cellKeys.result(cell.id), new TextEncoder().encode(JSON.stringify(stored, null, 2)));
    return stored;
  } finally {
    model.dispose();
    tf.disposeVariables();
  }
}

import * as tf from '@tensorflow/tfjs-core';
import type { Cell, CellResult } from '@transferlab/experiment';
import { paperScoreOver, recentTrend } from '@transferlab/experiment';
import { evaluate, loadModel, selectBackend } from '@transferlab/nn';
import type { ObjectStore } from '@transferlab/platform';
import { loadSubsets } from './cell-data.ts';
import { cellKeys, getJson, putJson } from './cell-store.ts';
import { type TrainingOutcome, readTrainingOutcome } from './train-cell.ts';

/** A cell's result as stored, with what only a run knows (memory). */
export type StoredResult = CellResult & { peakRssBytes?: number };

export async function readResult(store: ObjectStore, cellId: string): Promise<StoredResult | undefined> {
  const result = await getJson<StoredResult>(store, cellKeys.result(cellId));
  if (!result) return undefined;
  // JSON writes NaN as null: a measure cell's score, or a CKA of a layer with no variance.
  const nan = (value: number | null): number => value ?? Number.NaN;
  result.score = nan(result.score);
  if (result.measures)
    result.measures = result.measures.map((measure) => ({
      ...measure,
      ckaSourceTarget: nan(measure.ckaSourceTarget),
      ckaTargetReplica: nan(measure.ckaTargetReplica),
      logmeSource: nan(measure.logmeSource),
      logmeTarget: nan(measure.logmeTarget),
    }));
  return result;
}

/** The report's fields of how a cell's frozen layers ran (the cache's build time stays in training.json). */
function prefixCacheUse(use: NonNullable<TrainingOutcome['prefixCache']>): CellResult['prefixCache'] {
  const { seconds: _seconds, ...rest } = use;
  return rest;
}

/**
 * A cell's result from its training alone (history, timing): no test metrics yet, so its
 * primary score is NaN until the evaluator sets it.
 */
export function trainedResult(cell: Cell, outcome: TrainingOutcome): StoredResult {
  const valTop1History = outcome.history.map((record) => record.valTop1);
  return {
    cellId: cell.id,
    name: cell.name,
    arm: cell.arm,
    kind: cell.kind,
    n: cell.n,
    seed: cell.seed,
    target: cell.target,
    score: Number.NaN,
    valScore: paperScoreOver(valTop1History, cell.training.scoreTopK, cell.training.maxEpochs),
    valTop1History,
    epochs: outcome.epochs,
    stoppedBy: outcome.stoppedBy,
    stillImproving: recentTrend(valTop1History).rising,
    seconds: outcome.seconds,
    imagesPerSecond: outcome.imagesPerSecond,
    backend: outcome.backend,
    peakRssBytes: outcome.peakRssBytes,
    ...(outcome.prefixCache ? { prefixCache: prefixCacheUse(outcome.prefixCache) } : {}),
  };
}

/**
 * The evaluator's work: scores a trained cell on its target half's test set and writes the
 * cell's result, last, so a present result means a finished cell.
 */
export async function evaluateCell(store: ObjectStore, cell: Cell): Promise<StoredResult> {
  const outcome = await readTrainingOutcome(store, cell.id);
  if (!outcome) {
    throw new Error(
      `cell ${cell.name} (${cell.id}) has not finished training: ${store.describe(cellKeys.training(cell.id))} is absent`,
    );
  }
  await selectBackend();
  const [testSet] = await loadSubsets(store, cell, ['test']);
  const model = await loadModel(store, cellKeys.final(cell.id));
  try {
    const test = evaluate(model, { images: testSet!.pixels, labels: testSet!.labels, count: testSet!.count });
    const result: StoredResult = {
      ...trainedResult(cell, outcome),
      // The primary score: held-out data that no decision of the run ever looked at.
      score: test.top1,
      testTop1: test.top1,
      // With five classes or fewer every label is in the top 5: the number would say nothing.
      ...(testSet!.classes.length > 5 ? { testTop5: test.top5 } : {}),
      perClass: Object.fromEntries(testSet!.classes.map((name, index) => [name, test.perClass[index] ?? NaN])),
    };
    await putJson(store, cellKeys.result(cell.id), result);
    return result;
  } finally {
    model.dispose();
    tf.disposeVariables();
  }
}

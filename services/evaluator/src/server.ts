/**
 * EvaluatorService: scores a trained cell's net on a subset of its target half (the test set
 * by default), stores the scores beside the cell, answers with them and, when the call names
 * its sweep, publishes them. runner's evaluateCell does the test-set work and writes the
 * cell's `result.json`.
 */
import { createHash } from 'node:crypto';
import { type Metadata, status } from '@grpc/grpc-js';
import * as tf from '@tensorflow/tfjs-core';
import { manifestKey, openSplit } from '@transferlab/data';
import type { Cell } from '@transferlab/experiment';
import { evaluate, loadModel, selectBackend } from '@transferlab/nn';
import {
  type Bus,
  type Logger,
  type ObjectStore,
  evaluationFinishedSubject,
  grpcError,
  token,
  unaryHandler,
} from '@transferlab/platform';
import { Evaluation, Half, Subset } from '@transferlab/proto';
import type { EvaluateRequest, EvaluatorServiceServer, MeasureRequest } from '@transferlab/proto';
import { MapperError, cellResultToProto, checkpointPrefix, halfFromProto } from '@transferlab/proto/mappers';
import {
  type StoredResult,
  cellKeys,
  evaluateCell,
  getJson,
  loadSubsets,
  measureCell,
  putJson,
  readResult,
} from '@transferlab/runner';
import { type SubsetName, evaluationToProto, subsetFromProto } from './evaluation.ts';

export const SERVICE_NAME = 'transferlab.v1.EvaluatorService';
export const DEFAULT_PORT = 50063;
/**
 * gRPC metadata naming the sweep that asks (EvaluateRequest has no field for it): when given,
 * the evaluation is published on `transferlab.evaluation.finished.<sweepId>.<cellId>`.
 */
export const SWEEP_ID_METADATA = 'transferlab-sweep-id';

export interface EvaluatorDeps {
  store: ObjectStore;
  /** Where evaluations are published; without one nothing is published. */
  bus?: Bus;
  log: Logger;
}

/** The JSON published on `transferlab.evaluation.finished.<sweepId>.<cellId>`. */
export interface EvaluationFinished {
  cellId: string;
  sweepId: string;
  subset: SubsetName;
  /** The Evaluation message in its proto3 JSON form. */
  evaluation: unknown;
  /** The cell's stored result (`cells/<id>/result.json`), for the test subset. */
  result?: StoredResult;
}

/** Where scores on the validation or training subset are kept (the test set's are result.json). */
export function evaluationKey(cellId: string, subset: Exclude<SubsetName, 'test'>): string {
  return `${cellKeys.prefix(cellId)}/evaluation-${subset}.json`;
}

export function createServer(deps: EvaluatorDeps): EvaluatorServiceServer {
  return {
    evaluate: unaryHandler(async (request, call) => {
      const sweepId = sweepIdOf(call.metadata);
      const { evaluation, result } = await evaluateRequest(deps, request, { sweepId });
      return { evaluation, ...(result ? { result: cellResultToProto(result) } : {}) };
    }, deps.log),
    measure: unaryHandler(
      async (request) => ({ result: cellResultToProto(await measureRequest(deps, request)) }),
      deps.log,
    ),
  };
}

// TensorFlow.js keeps its state per process (evaluateCell ends with disposeVariables), so the
// process evaluates (and measures) one net at a time, however many calls come in.
let tail: Promise<unknown> = Promise.resolve();
function serially<T>(task: () => Promise<T>): Promise<T> {
  const run = tail.then(task);
  tail = run.catch(() => undefined);
  return run;
}

/**
 * Evaluate's work: checks, the scores (stored ones when there are), the event. On the test
 * subset, also the cell's stored result.
 */
export async function evaluateRequest(
  deps: EvaluatorDeps,
  request: EvaluateRequest,
  options: { sweepId?: string } = {},
): Promise<{ evaluation: Evaluation; result?: StoredResult }> {
  const { store, log } = deps;
  const subset = subsetFromProto(request.subset);
  if (subset === undefined) throw grpcError(status.INVALID_ARGUMENT, `subset: ${request.subset} has no meaning here`);
  const cell = await storedCell(store, request);
  await checkTrained(store, cell, request);

  const { manifest } = await openSplit(store, cell.splitId);
  const half = manifest.halves[cell.target];
  const target = {
    cellId: cell.id,
    half: cell.target,
    subset,
    classes: half.classes,
    perClassCounts: half.subsets[subset].perClass,
  };

  let evaluation: Evaluation;
  let result: StoredResult | undefined;
  if (subset === 'test') {
    result = await serially(async () => (await readResult(store, cell.id)) ?? failAsStatus(evaluateCell(store, cell)));
    evaluation = evaluationToProto(target, {
      top1: result.testTop1 ?? NaN,
      top5: result.testTop5 ?? NaN,
      perClassTop1: half.classes.map((name) => result?.perClass?.[name] ?? NaN),
    });
  } else {
    const key = evaluationKey(cell.id, subset);
    evaluation = await serially(async () => {
      const stored = await getJson<unknown>(store, key);
      if (stored !== undefined) return Evaluation.fromJSON(stored);
      const scores = await failAsStatus(scoreSubset(store, cell, subset));
      const computed = evaluationToProto(target, scores);
      await putJson(store, key, Evaluation.toJSON(computed));
      return computed;
    });
  }
  log.info({ cellId: cell.id, cell: cell.name, subset, top1: evaluation.top1, sweepId: options.sweepId }, 'evaluated');

  if (options.sweepId !== undefined && deps.bus) {
    const finished: EvaluationFinished = {
      cellId: cell.id,
      sweepId: options.sweepId,
      subset,
      evaluation: Evaluation.toJSON(evaluation),
      ...(result ? { result } : {}),
    };
    try {
      await deps.bus.publish(evaluationFinishedSubject(options.sweepId, cell.id), finished, {
        msgId: `evaluation-${options.sweepId}-${cell.id}-${subset}`,
      });
    } catch (error) {
      // The scores are stored; a caller of the RPC has them in the response.
      log.warn({ cellId: cell.id, sweepId: options.sweepId, err: error }, 'publishing the evaluation failed');
    }
  }
  return { evaluation, ...(result ? { result } : {}) };
}

/**
 * Measure's work: the stored measure cell (NOT_FOUND, INVALID_ARGUMENT for another kind), its
 * base nets finished (FAILED_PRECONDITION), then the stored result or a new one.
 */
export async function measureRequest(deps: EvaluatorDeps, request: MeasureRequest): Promise<StoredResult> {
  const { store, log } = deps;
  const cell = await storedCell(store, {
    cellId: request.cellId,
    splitId: '',
    half: Half.HALF_UNSPECIFIED,
    subset: Subset.SUBSET_UNSPECIFIED,
  });
  if (cell.kind !== 'measure' || !cell.measure)
    throw grpcError(
      status.INVALID_ARGUMENT,
      `cell_id: ${cell.name} (${cell.id}) is a ${cell.kind} cell, not a measure cell`,
    );
  for (const id of [cell.measure.sourceCellId, cell.measure.targetCellId, cell.measure.replicaCellId]) {
    if (!(await readResult(store, id)))
      throw grpcError(
        status.FAILED_PRECONDITION,
        `measure cell ${cell.name}: base cell ${id} has not finished (${store.describe(cellKeys.result(id))} is absent)`,
      );
  }
  const result = await serially(
    async () => (await readResult(store, cell.id)) ?? failAsStatus(measureCell(store, cell)),
  );
  log.info({ cellId: cell.id, cell: cell.name, layers: result.measures?.length ?? 0 }, 'measured');
  return result;
}

/** The sweep id a call's metadata carries, checked as a subject token. */
function sweepIdOf(metadata: Metadata): string | undefined {
  const [value] = metadata.get(SWEEP_ID_METADATA);
  if (value === undefined || value === '') return undefined;
  return checkSweepId(String(value), `metadata ${SWEEP_ID_METADATA}`);
}

function checkSweepId(sweepId: string, field: string): string {
  try {
    return token(sweepId, 'sweep id');
  } catch (error) {
    throw grpcError(status.INVALID_ARGUMENT, `${field}: ${(error as Error).message}`);
  }
}

/**
 * The cell the controller stored: NOT_FOUND without one, INVALID_ARGUMENT when the request's
 * split or half contradicts it.
 */
async function storedCell(store: ObjectStore, request: EvaluateRequest): Promise<Cell> {
  const id = request.cellId;
  if (!id) throw grpcError(status.INVALID_ARGUMENT, 'cell_id: is required');
  if (!/^[-_=A-Za-z0-9]{1,256}$/.test(id))
    throw grpcError(status.INVALID_ARGUMENT, `cell_id: '${id}' is not a cell id`);
  const cell = await getJson<Cell>(store, cellKeys.cell(id));
  if (!cell)
    throw grpcError(status.NOT_FOUND, `cell ${id}: no cell definition at ${store.describe(cellKeys.cell(id))}`);
  if (request.splitId && request.splitId !== cell.splitId) {
    throw grpcError(
      status.INVALID_ARGUMENT,
      `split_id: is ${request.splitId}, but cell ${cell.name} (${id}) trains on split ${cell.splitId}`,
    );
  }
  if (request.half !== Half.HALF_UNSPECIFIED) {
    let half: string;
    try {
      half = halfFromProto(request.half, 'half');
    } catch (error) {
      if (error instanceof MapperError) throw grpcError(status.INVALID_ARGUMENT, error.message);
      throw error;
    }
    if (half !== cell.target) {
      throw grpcError(
        status.INVALID_ARGUMENT,
        `half: is ${half}, but cell ${cell.name} (${id}) has target half ${cell.target}: its net classifies that half's classes`,
      );
    }
  }
  const final = cellKeys.final(id);
  if (request.checkpoint?.key && checkpointPrefix(request.checkpoint) !== final) {
    throw grpcError(
      status.INVALID_ARGUMENT,
      `checkpoint.key: is ${request.checkpoint.key}, but the evaluator scores cell ${cell.name}'s trained net at ${final}/manifest.json`,
    );
  }
  return cell;
}

/** The split must be there (NOT_FOUND), and the cell trained (FAILED_PRECONDITION). */
async function checkTrained(store: ObjectStore, cell: Cell, request: EvaluateRequest): Promise<void> {
  const splitKey = manifestKey(cell.splitId);
  if (!(await store.stat(splitKey))) {
    throw grpcError(
      status.NOT_FOUND,
      `split ${cell.splitId} of cell ${cell.name}: ${store.describe(splitKey)} is absent`,
    );
  }
  const trainingKey = cellKeys.training(cell.id);
  const finalKey = `${cellKeys.final(cell.id)}/manifest.json`;
  for (const key of [trainingKey, finalKey]) {
    if (!(await store.stat(key))) {
      throw grpcError(
        status.FAILED_PRECONDITION,
        `cell ${cell.name} (${cell.id}) has not finished training: ${store.describe(key)} is absent`,
      );
    }
  }
  const expected = request.checkpoint?.sha256;
  if (expected) {
    const actual = createHash('sha256')
      .update(await store.get(finalKey))
      .digest('hex');
    if (actual !== expected) {
      throw grpcError(
        status.FAILED_PRECONDITION,
        `checkpoint.sha256: ${store.describe(finalKey)} has sha256 ${actual}, the request expects ${expected}`,
      );
    }
  }
}

/** A corrupt or unfitting checkpoint is the caller's precondition, not the evaluator's fault. */
async function failAsStatus<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    const message = (error as Error).message;
    if (/checkpoint|outside 0\.\./.test(message)) throw grpcError(status.FAILED_PRECONDITION, message);
    throw error;
  }
}

/** The trained net's scores on the validation or training subset of the cell's target half. */
async function scoreSubset(
  store: ObjectStore,
  cell: Cell,
  subset: Exclude<SubsetName, 'test'>,
): Promise<{ top1: number; top5: number; perClassTop1: number[] }> {
  await selectBackend();
  const [images] = await loadSubsets(store, cell, [subset]);
  const model = await loadModel(store, cellKeys.final(cell.id));
  try {
    const scores = evaluate(model, { images: images!.pixels, labels: images!.labels, count: images!.count });
    // As for the test split: with five classes or fewer top-5 is always 1 and says nothing.
    const top5 = images!.classes.length > 5 ? scores.top5 : Number.NaN;
    return { top1: scores.top1, top5, perClassTop1: scores.perClass };
  } finally {
    model.dispose();
    tf.disposeVariables();
  }
}

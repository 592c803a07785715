import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import type { Cell } from '@transferlab/experiment';
import {
  type Bus,
  type BusMessage,
  LocalFolderStore,
  callUnary,
  createInProcessBus,
  createLogger,
  evaluationFinishedFilter,
  startGrpcServer,
} from '@transferlab/platform';
import type { GrpcServer } from '@transferlab/platform';
import { EvaluatorServiceClient, EvaluatorServiceService, Half, Subset } from '@transferlab/proto';
import type { EvaluateRequest } from '@transferlab/proto';
import { cellResultFromProto, checkpointRef } from '@transferlab/proto/mappers';
import { cellKeys, ensureSplits, evaluateCell, putJson, readResult, trainCell } from '@transferlab/runner';
import { healthStatus as healthStatusAt } from '@transferlab/platform';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type EvaluationFinished, SERVICE_NAME, SWEEP_ID_METADATA, createServer } from './server.ts';

// The real server on loopback over a temporary folder store and the in-process bus, called
// through the generated client. The net is a real baseB trained for one epoch on a tiny MNIST split.

const plan = expandGrid(
  validateSpec({
    name: 'evaluator-test',
    dataset: { kind: 'mnist' },
    split: { trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
    net: { width: 0.25 },
    training: { maxEpochs: 1, batchSize: 50, augment: false },
    layers: [1],
    arms: ['baseA', 'baseB'],
    repeats: 1,
    // Adds baseB2 and a measure cell; the cells above keep their ids.
    measures: { examples: 24, batch: 8, maxFeatures: 128 },
  }),
);
const cell = (arm: string): Cell => plan.cells.find((c) => c.arm === arm)!;
const sweepId = 'sweep-1';

let dir: string;
let store: LocalFolderStore;
let bus: Bus;
let server: GrpcServer;
let client: EvaluatorServiceClient;
const published: BusMessage[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'evaluator-'));
  store = new LocalFolderStore(join(dir, 'store'));
  await ensureSplits(store, plan.splits, { specDir: dir });
  for (const c of plan.cells) await putJson(store, cellKeys.cell(c.id), c);
  await trainCell(store, cell('baseB'));

  bus = createInProcessBus();
  await bus.subscribe(evaluationFinishedFilter(sweepId), (message) => {
    published.push(message);
  });
  const log = createLogger('evaluator-test', { level: 'silent' });
  server = await startGrpcServer({
    services: [
      { name: SERVICE_NAME, definition: EvaluatorServiceService, implementation: createServer({ store, bus, log }) },
    ],
    port: 0,
    log,
  });
  client = new EvaluatorServiceClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown(1000);
  await bus?.close();
  await rm(dir, { recursive: true, force: true });
});

function evaluateCall(request: Partial<EvaluateRequest>, sweep?: string) {
  const metadata = new grpc.Metadata();
  if (sweep) metadata.set(SWEEP_ID_METADATA, sweep);
  return callUnary(
    client.evaluate.bind(client),
    {
      cellId: '',
      checkpoint: undefined,
      splitId: '',
      half: Half.HALF_UNSPECIFIED,
      subset: Subset.SUBSET_UNSPECIFIED,
      ...request,
    },
    { metadata },
  );
}

async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

async function until<T>(find: () => T | undefined): Promise<T> {
  for (let i = 0; i < 400; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error('timed out');
}

/** grpc.health.v1 Check on this test's server. */
const healthStatus = (port: number, service: string): Promise<string> => healthStatusAt(`127.0.0.1:${port}`, service);

describe('EvaluatorService', () => {
  it('answers health checks with SERVING', async () => {
    expect(await healthStatus(server.port, SERVICE_NAME)).toBe('SERVING');
  });

  it('scores a trained cell on its test set, stores the result and publishes it', async () => {
    const baseB = cell('baseB');
    const response = await evaluateCall(
      {
        cellId: baseB.id,
        splitId: baseB.splitId,
        half: Half.HALF_B,
        checkpoint: checkpointRef(cellKeys.final(baseB.id)),
      },
      sweepId,
    );
    const result = await readResult(store, baseB.id);
    expect(result).toMatchObject({ cellId: baseB.id, arm: 'baseB', epochs: 1 });
    const evaluation = response.evaluation!;
    expect(evaluation).toMatchObject({ cellId: baseB.id, half: Half.HALF_B, subset: Subset.SUBSET_TEST, count: 25 });
    expect(evaluation.top1).toBe(result!.testTop1);
    // Five classes per half: every label is in the top 5, so there is no top-5 to report.
    expect(result!.testTop5).toBeUndefined();
    expect(evaluation.top5).toBeNaN();
    expect(result!.score).toBe(result!.testTop1);
    // The stored result comes back in the reply: the controller need not read it back.
    expect(cellResultFromProto(response.result!)).toEqual(result);
    expect(evaluation.perClass.map((c) => [c.className, c.count])).toEqual(
      Object.keys(result!.perClass!).map((name) => [name, 5]),
    );

    const event = await until(() => published.find((m) => m.subject.endsWith(`.${baseB.id}`)));
    expect(event.subject).toBe(`transferlab.evaluation.finished.${sweepId}.${baseB.id}`);
    const body = event.json<EvaluationFinished>();
    expect(body).toMatchObject({ cellId: baseB.id, sweepId, subset: 'test', result: { cellId: baseB.id } });
    expect(body.evaluation).toMatchObject({ cellId: baseB.id, half: 'HALF_B', subset: 'SUBSET_TEST' });

    // Idempotent: the stored result answers a second call.
    const again = await evaluateCall({ cellId: baseB.id });
    expect(again.evaluation).toEqual(evaluation);
  });

  it('scores the validation subset on request', async () => {
    const baseB = cell('baseB');
    const response = await evaluateCall({ cellId: baseB.id, subset: Subset.SUBSET_VAL });
    expect(response.evaluation).toMatchObject({ subset: Subset.SUBSET_VAL, count: 25 });
    expect(response.evaluation!.top1).toBeGreaterThanOrEqual(0);
    expect(response.result).toBeUndefined();
    expect((await evaluateCall({ cellId: baseB.id, subset: Subset.SUBSET_VAL })).evaluation).toEqual(
      response.evaluation,
    );
  });

  it('refuses a cell that has not finished training with FAILED_PRECONDITION', async () => {
    const baseA = cell('baseA');
    const error = await rejection(evaluateCall({ cellId: baseA.id }));
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(
      new RegExp(
        `^cell baseA seed=1 \\(${baseA.id}\\) has not finished training: .*cells/${baseA.id}/training\\.json is absent$`,
      ),
    );
  });

  it('refuses a request that contradicts the stored cell with INVALID_ARGUMENT', async () => {
    const baseB = cell('baseB');
    const half = await rejection(evaluateCall({ cellId: baseB.id, half: Half.HALF_A }));
    expect(half.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(half.details).toMatch(/^half: is A, but cell baseB seed=1 .* has target half B/);
    const split = await rejection(evaluateCall({ cellId: baseB.id, splitId: 'other' }));
    expect(split.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(split.details).toMatch(/^split_id: is other, but cell baseB seed=1/);
    const none = await rejection(evaluateCall({}));
    expect(none.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(none.details).toBe('cell_id: is required');
    const badSweep = await rejection(evaluateCall({ cellId: baseB.id }, 'no.dots'));
    expect(badSweep.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(badSweep.details).toMatch(/^metadata transferlab-sweep-id: sweep id: 'no\.dots' is not an id/);
  });

  it('refuses a checkpoint whose sha256 does not match with FAILED_PRECONDITION', async () => {
    const baseB = cell('baseB');
    const error = await rejection(
      evaluateCall({ cellId: baseB.id, checkpoint: checkpointRef(cellKeys.final(baseB.id), 'ab'.repeat(32)) }),
    );
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/^checkpoint\.sha256: .* has sha256 [0-9a-f]{64}, the request expects (ab){32}$/);
  });

  it('refuses a cell the controller never stored with NOT_FOUND', async () => {
    const error = await rejection(evaluateCall({ cellId: 'e'.repeat(20) }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toMatch(/^cell e{20}: no cell definition at .*cells\/e{20}\/cell\.json$/);
  });

  it('measures a measure cell once its base nets are done, and refuses it before and other kinds', async () => {
    const measure = cell('measureB');
    const measureCall = (cellId: string) => callUnary(client.measure.bind(client), { cellId });
    const early = await rejection(measureCall(measure.id));
    expect(early.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(early.details).toMatch(/^measure cell measureB seed=1: base cell [0-9a-f]+ has not finished/);
    const other = await rejection(measureCall(cell('baseB').id));
    expect(other.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(other.details).toMatch(/is a base cell, not a measure cell$/);

    for (const arm of ['baseA', 'baseB', 'baseB2']) {
      if (!(await readResult(store, cell(arm).id))) {
        await trainCell(store, cell(arm));
        await evaluateCell(store, cell(arm));
      }
    }
    const { result } = await measureCall(measure.id);
    expect(result!.measures.map((m) => m.layer)).toEqual(['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7']);
    for (const m of result!.measures) {
      expect(m).toMatchObject({ examples: 24, ckaMethod: 'minibatch' });
      expect(m.features).toBeLessThanOrEqual(128);
      expect(Number.isFinite(m.logmeSource)).toBe(true);
    }
    const stored = await readResult(store, measure.id);
    expect(stored!.measures).toHaveLength(7);
    // Answered from the stored result the second time.
    expect((await measureCall(measure.id)).result!.measures).toEqual(result!.measures);
  });
});

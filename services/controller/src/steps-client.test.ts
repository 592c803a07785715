// The gRPC cell steps against scripted DatasetSplitter, Transplanter and Evaluator servers on
// loopback: what each request carries (split id, checkpoint hash, sweep header, deadline), and
// how remote errors come back.
import { createHash } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, grpcError } from '@transferlab/platform';
import {
  type CreateSplitRequest,
  CreateSplitResponse,
  EvaluateResponse,
  TransplantResponse,
  DatasetSplitterServiceService,
  type EvaluateRequest,
  EvaluatorServiceService,
  Half,
  SplitState,
  type TransplantRequest,
  TransplanterServiceService,
} from '@transferlab/proto';
import { cellResultToProto } from '@transferlab/proto/mappers';
import { cellKeys, putJson } from '@transferlab/runner/cell-store';
import type { StoredResult } from '@transferlab/runner/evaluate-cell';
import { GrpcCellSteps, StepError } from './steps-client.ts';

const plan = expandGrid(
  validateSpec({ name: 'steps', dataset: { kind: 'mnist' }, layers: [2], arms: ['baseA', 'baseB', 'AnB'], repeats: 1 }),
);
const base = plan.cells.find((cell) => cell.arm === 'baseA')!;
const transfer = plan.cells.find((cell) => cell.arm === 'AnB')!;

const seen: { split?: CreateSplitRequest; transplant?: TransplantRequest; evaluate?: EvaluateRequest } = {};
const headers: { sweepId?: string; deadline?: number } = {};
let fail: grpc.ServiceError | undefined;
let withoutResult = false;
/** A cell's result as the evaluator stores it and returns it. */
const STORED: StoredResult = {
  cellId: '',
  name: base.name,
  arm: base.arm,
  kind: base.kind,
  seed: base.seed,
  target: base.target,
  score: 0.5,
  valTop1History: [0.4, 0.5],
  testTop1: 0.5,
  perClass: { zero: 0.5 },
  epochs: 2,
  stoppedBy: 'max-epochs',
  stillImproving: false,
  seconds: 1.5,
  backend: 'wasm',
};
let server: grpc.Server;
let steps: GrpcCellSteps;
let store: LocalFolderStore;

beforeAll(async () => {
  store = new LocalFolderStore(await mkdtemp(join(tmpdir(), 'tl-steps-')));
  server = new grpc.Server();
  server.addService(DatasetSplitterServiceService, {
    createSplit: (call: grpc.ServerUnaryCall<CreateSplitRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      seen.split = call.request;
      const deadline = call.getDeadline();
      headers.deadline = deadline instanceof Date ? deadline.getTime() : deadline;
      if (fail) return callback(fail);
      callback(
        null,
        CreateSplitResponse.fromPartial({
          split: { id: call.request.expectedSplitId, state: SplitState.SPLIT_STATE_READY },
          created: true,
        }),
      );
    },
    getSplit: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
      callback(grpcError(grpc.status.UNIMPLEMENTED, '')),
  });
  server.addService(TransplanterServiceService, {
    transplant: (call: grpc.ServerUnaryCall<TransplantRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      seen.transplant = call.request;
      if (fail) return callback(fail);
      callback(null, TransplantResponse.fromPartial({ copiedLayers: ['conv1', 'conv2'] }));
    },
  });
  server.addService(EvaluatorServiceService, {
    evaluate: (call: grpc.ServerUnaryCall<EvaluateRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
      seen.evaluate = call.request;
      headers.sweepId = String(call.metadata.get('transferlab-sweep-id')[0]);
      if (fail) return callback(fail);
      // As the real evaluator does: the result is stored, then returned with the scores.
      const result = { ...STORED, cellId: call.request.cellId };
      if (withoutResult) return callback(null, EvaluateResponse.fromPartial({ evaluation: { cellId: result.cellId } }));
      void putJson(store, cellKeys.result(result.cellId), result).then(() =>
        callback(
          null,
          EvaluateResponse.fromPartial({ evaluation: { cellId: result.cellId }, result: cellResultToProto(result) }),
        ),
      );
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  const address = `127.0.0.1:${port}`;
  steps = new GrpcCellSteps({
    splitterAddress: address,
    transplanterAddress: address,
    evaluatorAddress: address,
    store,
    deadlines: { createSplit: 60_000 },
  });
});

afterAll(() => {
  steps?.close();
  server?.forceShutdown();
});

describe('GrpcCellSteps', () => {
  it('asks for the split the controller planned, waiting for it, with a deadline', async () => {
    fail = undefined;
    const task = plan.splits[0]!;
    const before = Date.now();
    await steps.createSplit(task);
    expect(seen.split?.expectedSplitId).toBe(task.id);
    expect(seen.split?.wait).toBe(true);
    expect(seen.split?.seed).toBe(task.seed);
    expect(seen.split?.dataset?.kind?.$case).toBe('mnist');
    expect(headers.deadline).toBeGreaterThan(before + 50_000);
    expect(headers.deadline).toBeLessThan(before + 70_000);
  });

  it('sends the source net with its manifest hash to the transplanter', async () => {
    fail = undefined;
    const manifest = new TextEncoder().encode('{"objects":[]}');
    await store.put(`${cellKeys.final(base.id)}/manifest.json`, manifest);
    await steps.transplant(transfer);
    expect(seen.transplant?.cell?.id).toBe(transfer.id);
    expect(seen.transplant?.cell?.n).toBe(2);
    expect(seen.transplant?.sourceCheckpoint).toEqual({
      key: `cells/${base.id}/final/manifest.json`,
      sha256: createHash('sha256').update(manifest).digest('hex'),
    });
  });

  it('evaluates on the target half with the sweep id in a header, and returns the stored result', async () => {
    fail = undefined;
    const result = await steps.evaluate(base, { sweepId: 'sweep-1' });
    // The reply's result, as the evaluator stored it: nothing read back from the store.
    expect(result).toEqual({ ...STORED, cellId: base.id });
    expect(seen.evaluate?.half).toBe(Half.HALF_A);
    expect(seen.evaluate?.splitId).toBe(base.splitId);
    expect(headers.sweepId).toBe('sweep-1');
  });

  it('refuses a reply without the result, as a retryable step error', async () => {
    withoutResult = true;
    const error = await steps.evaluate(base, { sweepId: 'sweep-1' }).then(
      () => undefined,
      (caught: unknown) => caught as StepError,
    );
    withoutResult = false;
    expect(error).toBeInstanceOf(StepError);
    expect(error!.message).toMatch(/^Evaluate baseA seed=1 \(\w+\): the evaluator answered without the cell's result$/);
    expect(error!.retryable).toBe(true);
  });

  it('turns a remote error into one with its status name; permanent ones are not retryable', async () => {
    fail = grpcError(grpc.status.FAILED_PRECONDITION, 'the source cell has no trained net');
    const permanent = await steps.transplant(transfer).catch((error: unknown) => error as StepError);
    expect(permanent).toBeInstanceOf(StepError);
    expect(permanent!.message).toMatch(
      /^Transplant AnB n=2 seed=1 \(\w+\) \(127\.0\.0\.1:\d+\): FAILED_PRECONDITION: the source cell has no trained net$/,
    );
    expect(permanent!.retryable).toBe(false);

    fail = grpcError(grpc.status.UNAVAILABLE, 'try again');
    const transient = await steps.createSplit(plan.splits[0]!).catch((error: unknown) => error as StepError);
    expect(transient!.message).toContain('UNAVAILABLE: try again');
    expect(transient!.retryable).toBe(true);
  });
});

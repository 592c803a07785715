import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import type { Cell } from '@transferlab/experiment';
import { LocalFolderStore, callUnary, createLogger, startGrpcServer } from '@transferlab/platform';
import type { GrpcServer } from '@transferlab/platform';
import { Cell as CellMessage, TransplanterServiceClient, TransplanterServiceService } from '@transferlab/proto';
import type { TransplantRequest } from '@transferlab/proto';
import { cellToProto, checkpointRef } from '@transferlab/proto/mappers';
import { cellKeys, ensureSplits, putJson, trainCell } from '@transferlab/runner';
import { healthStatus as healthStatusAt } from '@transferlab/platform';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_NAME, createServer } from './server.ts';

// The real server on loopback over a temporary folder store, called through the generated
// client. The source net is a real baseA trained for one epoch on a tiny MNIST split.

const plan = expandGrid(
  validateSpec({
    name: 'transplanter-test',
    dataset: { kind: 'mnist' },
    split: { trainPerClass: 20, valPerClass: 5, testPerClass: 5 },
    net: { width: 0.25 },
    training: { maxEpochs: 1, batchSize: 50, augment: false },
    layers: [2],
    arms: ['baseA', 'AnB', 'AnB+', 'BnB', 'RnB'],
    repeats: 1,
  }),
);
const cell = (arm: string): Cell => plan.cells.find((c) => c.arm === arm)!;

let dir: string;
let store: LocalFolderStore;
let server: GrpcServer;
let client: TransplanterServiceClient;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'transplanter-'));
  store = new LocalFolderStore(join(dir, 'store'));
  await ensureSplits(store, plan.splits, { specDir: dir });
  // What the controller does before it asks any service about a cell.
  for (const c of plan.cells) await putJson(store, cellKeys.cell(c.id), c);
  await trainCell(store, cell('baseA'));

  const log = createLogger('transplanter-test', { level: 'silent' });
  server = await startGrpcServer({
    services: [
      { name: SERVICE_NAME, definition: TransplanterServiceService, implementation: createServer({ store, log }) },
    ],
    port: 0,
    log,
  });
  client = new TransplanterServiceClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown(1000);
  await rm(dir, { recursive: true, force: true });
});

const transplant = (request: Partial<TransplantRequest>) =>
  callUnary(client.transplant.bind(client), { cell: undefined, sourceCheckpoint: undefined, ...request });

async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

const sha256 = async (key: string) =>
  createHash('sha256')
    .update(await store.get(key))
    .digest('hex');

/** grpc.health.v1 Check on this test's server. */
const healthStatus = (port: number, service: string): Promise<string> => healthStatusAt(`127.0.0.1:${port}`, service);

describe('TransplanterService', () => {
  it('answers health checks with SERVING', async () => {
    expect(await healthStatus(server.port, SERVICE_NAME)).toBe('SERVING');
  });

  it('writes a frozen transfer cell’s initial net from its source, and the same one again', async () => {
    const anb = cell('AnB');
    const source = checkpointRef(
      cellKeys.final(anb.sourceCellId!),
      await sha256(`${cellKeys.final(anb.sourceCellId!)}/manifest.json`),
    );
    const first = await transplant({ cell: CellMessage.fromPartial({ id: anb.id }), sourceCheckpoint: source });
    const key = `cells/${anb.id}/initial/manifest.json`;
    expect(first).toEqual({
      initialCheckpoint: { key, sha256: await sha256(key) },
      copiedLayers: ['conv1', 'conv2'],
      frozenLayers: ['conv1', 'conv2'],
    });
    const again = await transplant({ cell: cellToProto(anb), sourceCheckpoint: source });
    expect(again).toEqual(first);
  });

  it('copies without freezing for a fine-tuned cell, and freezes random layers for a random cell', async () => {
    const fineTuned = await transplant({ cell: cellToProto(cell('AnB+')) });
    expect(fineTuned.copiedLayers).toEqual(['conv1', 'conv2']);
    expect(fineTuned.frozenLayers).toEqual([]);
    const random = await transplant({ cell: cellToProto(cell('RnB')) });
    expect(random.copiedLayers).toEqual([]);
    expect(random.frozenLayers).toEqual(['conv1', 'conv2']);
    expect(random.initialCheckpoint?.key).toBe(`cells/${cell('RnB').id}/initial/manifest.json`);
  });

  it('refuses a cell whose source net is not trained with FAILED_PRECONDITION naming the source and key', async () => {
    const bnb = cell('BnB');
    const error = await rejection(transplant({ cell: CellMessage.fromPartial({ id: bnb.id }) }));
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toContain(`needs the trained net of its source cell ${bnb.sourceCellId}`);
    expect(error.details).toContain(`cells/${bnb.sourceCellId}/final/manifest.json is absent`);
  });

  it('refuses a source checkpoint whose sha256 does not match with FAILED_PRECONDITION', async () => {
    const anb = cell('AnB');
    const ref = checkpointRef(cellKeys.final(anb.sourceCellId!), '0'.repeat(64));
    const error = await rejection(transplant({ cell: CellMessage.fromPartial({ id: anb.id }), sourceCheckpoint: ref }));
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/^source_checkpoint\.sha256: .* has sha256 [0-9a-f]{64}, the request expects 0{64}$/);
  });

  it('refuses a base cell, a missing cell and a contradicting cell with INVALID_ARGUMENT', async () => {
    const base = await rejection(transplant({ cell: CellMessage.fromPartial({ id: cell('baseA').id }) }));
    expect(base.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(base.details).toMatch(/^cell\.kind: cell baseA seed=1 is a base cell/);

    const none = await rejection(transplant({}));
    expect(none.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(none.details).toBe('cell: is required');

    const wrong = cellToProto(cell('AnB'));
    wrong.n = 5;
    const contradicting = await rejection(transplant({ cell: wrong }));
    expect(contradicting.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(contradicting.details).toMatch(/cell\.n is 5, the stored cell has 2$/);
  });

  it('refuses a cell the controller never stored with NOT_FOUND', async () => {
    const error = await rejection(transplant({ cell: CellMessage.fromPartial({ id: 'f'.repeat(20) }) }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toMatch(/^cell f{20}: no cell definition at .*cells\/f{20}\/cell\.json$/);
  });
});

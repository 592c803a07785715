import { Metadata, Server, ServerCredentials, credentials, status } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Arm,
  Cell,
  CellKind,
  CellResult,
  CellState,
  Half,
  StartSweepRequest,
  StoppedBy,
  Sweep,
  SweepEvent,
  SweepServiceClient,
  SweepServiceService,
  SweepState,
  TransferMode,
} from './index.ts';
import type { GetSweepResponse, SweepServiceServer, WatchSweepResponse } from './index.ts';

// A real grpc-js server on loopback with two of SweepService's RPCs, called through the
// generated client: the smoke test that the generated code, grpc-js and our ESM/tsx setup agree.

const created = new Date('2025-01-02T03:04:05.678Z');

const fixedSweep = Sweep.create({
  id: 'sw-1',
  name: 'mnist-tiny',
  spec: { name: 'mnist-tiny', dataset: { kind: { $case: 'mnist', value: {} } }, layers: [1, 2], repeats: 2 },
  specText: 'name: mnist-tiny\ndataset: { kind: mnist }\nlayers: [1, 2]\nrepeats: 2\n',
  state: SweepState.SWEEP_STATE_RUNNING,
  counts: [
    { state: CellState.CELL_STATE_SUCCEEDED, count: 2 },
    { state: CellState.CELL_STATE_PENDING, count: 6 },
  ],
  totalCells: 8,
  splitIds: ['split-1', 'split-2'],
  createdAt: created,
  updatedAt: created,
});

const transferCell = Cell.create({
  id: 'c'.repeat(64),
  name: 'AnB+ n=2 seed=1',
  arm: Arm.ARM_ANB_PLUS,
  kind: CellKind.CELL_KIND_TRANSFER,
  seed: 1,
  splitId: 'split-1',
  target: Half.HALF_B,
  source: Half.HALF_A,
  n: 2,
  mode: TransferMode.TRANSFER_MODE_FINE_TUNED,
  state: CellState.CELL_STATE_RUNNING,
  attempts: 1,
});

/** The three events WatchSweep streams: a snapshot, a cell change, the sweep finishing. */
function events(sweepId: string): SweepEvent[] {
  return [
    SweepEvent.create({
      sequence: 1,
      sweepId,
      time: created,
      kind: { $case: 'snapshot', value: { sweep: fixedSweep, cells: [transferCell] } },
    }),
    SweepEvent.create({
      sequence: 2,
      sweepId,
      kind: { $case: 'cell', value: { ...transferCell, state: CellState.CELL_STATE_SUCCEEDED } },
    }),
    SweepEvent.create({
      sequence: 3,
      sweepId,
      kind: { $case: 'sweep', value: { ...fixedSweep, state: SweepState.SWEEP_STATE_SUCCEEDED } },
    }),
  ];
}

const implementation: Pick<SweepServiceServer, 'getSweep' | 'watchSweep'> = {
  getSweep(call, callback) {
    if (call.request.sweepId !== fixedSweep.id) {
      callback({ code: status.NOT_FOUND, details: `no sweep ${call.request.sweepId}` });
      return;
    }
    callback(null, { sweep: fixedSweep, cells: [transferCell] });
  },
  watchSweep(call) {
    for (const event of events(call.request.sweepId)) call.write({ event });
    call.end();
  },
};

let server: Server;
let client: SweepServiceClient;

beforeAll(async () => {
  server = new Server();
  server.addService(SweepServiceService, implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  client = new SweepServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
});

const deadline = () => ({ deadline: Date.now() + 10_000 });

function getSweep(sweepId: string): Promise<GetSweepResponse> {
  return new Promise((resolve, reject) => {
    client.getSweep({ sweepId }, new Metadata(), deadline(), (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

describe('SweepService over a real grpc-js server', () => {
  it('GetSweep returns the fixed sweep, timestamps and oneofs intact', async () => {
    const response = await getSweep('sw-1');
    expect(response.sweep).toEqual(fixedSweep);
    expect(response.sweep?.createdAt).toBeInstanceOf(Date);
    expect(response.sweep?.createdAt?.toISOString()).toBe(created.toISOString());
    expect(response.sweep?.spec?.dataset?.kind?.$case).toBe('mnist');
    expect(response.cells).toEqual([transferCell]);
    // What was given arrives; what was not stays unset rather than turning into zeros.
    expect(response.sweep?.spec?.repeats).toBe(2);
    expect(response.sweep?.spec?.training).toBeUndefined();
  });

  it('GetSweep of an unknown sweep fails with NOT_FOUND and the server message', async () => {
    const error = (await getSweep('nope').catch((e: unknown) => e)) as ServiceError;
    expect(error.code).toBe(status.NOT_FOUND);
    expect(error.details).toBe('no sweep nope');
  });

  it('an RPC the server does not implement fails with UNIMPLEMENTED', async () => {
    const error = await new Promise<ServiceError | null>((resolve) => {
      client.cancelSweep({ sweepId: 'sw-1', reason: '' }, new Metadata(), deadline(), (e) => resolve(e));
    });
    expect(error?.code).toBe(status.UNIMPLEMENTED);
  });

  it('WatchSweep streams the three events in order, then ends', async () => {
    const call = client.watchSweep({ sweepId: 'sw-1' }, deadline());
    const received: WatchSweepResponse[] = [];
    for await (const message of call) received.push(message as WatchSweepResponse);

    expect(received.map((message) => message.event)).toEqual(events('sw-1'));
    const kinds = received.map((message) => message.event?.kind?.$case);
    expect(kinds).toEqual(['snapshot', 'cell', 'sweep']);
    const last = received[2]?.event?.kind;
    expect(last?.$case === 'sweep' && last.value.state).toBe(SweepState.SWEEP_STATE_SUCCEEDED);
  });
});

describe('codecs', () => {
  it('a CellResult survives encode/decode, with optional fields, maps and NaN', () => {
    const result = CellResult.create({
      cellId: 'a'.repeat(64),
      name: 'AnB n=3 seed=1',
      arm: Arm.ARM_ANB,
      kind: CellKind.CELL_KIND_TRANSFER,
      n: 3,
      seed: 1,
      target: Half.HALF_B,
      score: 0.6123,
      valTop1History: [0.41, 0.55, 0.6123],
      testTop1: 0.6,
      testTop5: 0.91,
      perClass: { airplane: 0.7, cat: 0.45, empty: Number.NaN },
      epochs: 3,
      stoppedBy: StoppedBy.STOPPED_BY_PLATEAU,
      stillImproving: false,
      seconds: 12.5,
      imagesPerSecond: 96,
      backend: 'wasm',
      finalCheckpoint: { key: `cells/${'a'.repeat(64)}/final/manifest.json`, sha256: 'f'.repeat(64) },
      peakRssBytes: 3 * 2 ** 30,
    });
    const bytes = CellResult.encode(result).finish();
    expect(bytes.length).toBeGreaterThan(0);
    expect(CellResult.decode(bytes)).toEqual(result);
    // And through the canonical JSON mapping (enum names, NaN as "NaN").
    expect(CellResult.fromJSON(JSON.parse(JSON.stringify(CellResult.toJSON(result))))).toEqual(result);
  });

  it('a base cell result keeps n unset, and zero values are not put on the wire', () => {
    const base = CellResult.create({ cellId: 'b', arm: Arm.ARM_BASE_B, kind: CellKind.CELL_KIND_BASE });
    const decoded = CellResult.decode(CellResult.encode(base).finish());
    expect(decoded.n).toBeUndefined();
    expect(decoded.testTop1).toBeUndefined();
    expect(decoded.finalCheckpoint).toBeUndefined();
    expect(CellResult.encode(CellResult.create({})).finish().length).toBe(0);
    // n = 0 is a value, not absence: proto3 `optional` keeps it.
    expect(CellResult.decode(CellResult.encode({ ...base, n: 0 }).finish()).n).toBe(0);
  });

  it('StartSweepRequest carries the spec as text in its oneof', () => {
    const request = StartSweepRequest.create({
      specSource: { $case: 'specText', value: 'name: x\ndataset: { kind: mnist }\n' },
      specFile: 'x.yaml',
    });
    expect(StartSweepRequest.decode(StartSweepRequest.encode(request).finish())).toEqual(request);
  });
});

// Issue 9: property-based fuzzing of every gRPC request of every service. Requests are drawn
// from the services' own .proto files (protobufjs reflection), with hostile values in every
// field, and sent over loopback to the real servers (createServer + startGrpcServer, as main.ts
// wires them). No request may crash a server (INTERNAL, UNKNOWN, a dropped connection or a
// hang), and every INVALID_ARGUMENT must name the field it is about.
//
// Two FAKES, named so: the controller's cell steps and executor refuse all work, so that a valid
// StartSweep costs a few KV writes instead of training (the sweep then fails, loudly); and a
// CreateSplit for the built-in MNIST is sent as a CIFAR-10 folder that is not there, since a
// real split reads 70,000 images. Both are covered for real by the services' own tests.
import { mkdtemp, rm } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalFolderStore, PROTO_ROOT, createInProcessBus, createLogger, startGrpcServer } from '@transferlab/platform';
import { DatasetSplitterServiceService, EvaluatorServiceService, TransplanterServiceService } from '@transferlab/proto';
import type { CellSteps, Executor } from '@transferlab/runner/controller/ports';
import { SweepController } from '@transferlab/runner/controller/sweep-controller';
import { createServer as controllerServer, sweepServiceRegistration } from '../services/controller/src/server.ts';
import { createServer as splitterServer } from '../services/dataset-splitter/src/server.ts';
import { createServer as evaluatorServer } from '../services/evaluator/src/server.ts';
import { createServer as transplanterServer } from '../services/transplanter/src/server.ts';
import { parseSpec, plannedCellCount } from '@transferlab/experiment';
import { specText } from './support/spec-arbitrary.ts';

export const GRPC_FUZZ_RUNS = Number(process.env.TRANSFERLAB_GRPC_FUZZ_RUNS ?? 7500);

const PROTO_FILES = readdirSync(join(PROTO_ROOT, 'transferlab', 'v1')).map((file) => `transferlab/v1/${file}`);

/** FAKE steps and executor: every piece of work is refused at once. */
const refuse = async (): Promise<never> => {
  throw new Error('the fuzz test runs no cell work');
};
const refusingSteps: CellSteps = { createSplit: refuse, transplant: refuse, evaluate: refuse, measure: refuse };
const refusingExecutor: Executor = { run: refuse, close: async () => undefined };

// ---------------------------------------------------------------------------------------------
// Requests from the .proto files.

const hostileString = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 20 }) },
  {
    weight: 2,
    arbitrary: fc.constantFrom('', 'e2e-0a1b2c3d', 'a'.repeat(20), '../../../etc/passwd', '/etc/passwd', '/root', '*'),
  },
  { weight: 1, arbitrary: fc.constantFrom('x'.repeat(100_000), '\u0000', 'sweep.>', '${jndi:x}') },
);

function scalar(field: protobuf.Field): fc.Arbitrary<unknown> {
  if (field.resolvedType instanceof protobuf.Enum) {
    const values = Object.values(field.resolvedType.values);
    return fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...values) }, { weight: 1, arbitrary: fc.integer() });
  }
  switch (field.type) {
    case 'string':
      if (field.name === 'spec_text') return specText;
      return hostileString;
    case 'bool':
      return fc.boolean();
    case 'bytes':
      return fc.uint8Array({ maxLength: 32 }).map((bytes) => Buffer.from(bytes));
    case 'double':
    case 'float':
      return fc.oneof(fc.double(), fc.constantFrom(0, 1, 0.5, -1));
    case 'int32':
    case 'sint32':
    case 'sfixed32':
      return fc.oneof(fc.integer({ min: -2, max: 20 }), fc.constantFrom(-(2 ** 31), 2 ** 31 - 1));
    case 'uint32':
    case 'fixed32':
      return fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constant(2 ** 32 - 1));
    default:
      // 64-bit integers, as decimal strings protobufjs accepts.
      return fc.oneof(fc.integer({ min: -2, max: 20 }), fc.constantFrom(2 ** 53, 1e6)).map(String);
  }
}

const messages = new Map<string, fc.Arbitrary<Record<string, unknown>>>();

function message(type: protobuf.Type, depth = 0): fc.Arbitrary<Record<string, unknown>> {
  const key = `${type.fullName}@${depth}`;
  const cached = messages.get(key);
  if (cached) return cached;
  const valueOf = (field: protobuf.Field): fc.Arbitrary<unknown> => {
    const one =
      field.resolvedType instanceof protobuf.Type
        ? depth > 4
          ? fc.constant({})
          : message(field.resolvedType, depth + 1)
        : scalar(field);
    if (field instanceof protobuf.MapField) return fc.dictionary(hostileString, one, { maxKeys: 3 });
    return field.repeated ? fc.array(one, { maxLength: 4 }) : one;
  };
  // Members of a real oneof: at most one is set. Synthetic oneofs (proto3 `optional`) are plain fields.
  const oneofs = type.oneofsArray.filter((oneof) => !oneof.name.startsWith('_'));
  const inOneof = new Set(oneofs.flatMap((oneof) => oneof.fieldsArray.map((field) => field.name)));
  const plain = Object.fromEntries(
    type.fieldsArray.filter((field) => !inOneof.has(field.name)).map((field) => [field.name, valueOf(field)]),
  );
  const choices = oneofs.map((oneof) =>
    fc.oneof(
      fc.constant({}),
      ...oneof.fieldsArray.map((field) => valueOf(field).map((value) => ({ [field.name]: value }))),
    ),
  );
  const arbitrary = fc
    .tuple(fc.record(plain, { requiredKeys: [] }), ...choices)
    .map((parts) => Object.assign({}, ...parts) as Record<string, unknown>);
  messages.set(key, arbitrary);
  return arbitrary;
}

// ---------------------------------------------------------------------------------------------
// The servers, and one generic client per service.

interface Method {
  service: string;
  name: string;
  streaming: boolean;
  request: fc.Arbitrary<Record<string, unknown>>;
}

/** What a call ended with: its status and message. */
interface Answer {
  code: grpc.status;
  details: string;
}

/** Statuses that mean the server broke rather than answered. */
const CRASH = new Set([
  grpc.status.INTERNAL,
  grpc.status.UNKNOWN,
  grpc.status.UNAVAILABLE,
  grpc.status.DEADLINE_EXCEEDED,
]);

/**
 * Whether an INVALID_ARGUMENT names what it is about: a field path first (`sweep_id: ...`,
 * `invalid CreateSplitRequest: dataset.idx.train_images: ...`), or for a spec, each problem as
 * `file:line:col: path: ...`, `file: path: ...`, or `file:line:col: ...` (a YAML syntax error).
 */
function namesField(details: string): boolean {
  const path = String.raw`[A-Za-z_][\w]*(?:\.[\w]+|\[\d+\])*`;
  if (new RegExp(`^(?:invalid \\w+: )?${path}: `).test(details)) return true;
  const header = /^invalid sweep spec (.*) \((\d+) problems?\):$/.exec(details.split('\n')[0]!);
  if (!header) return false;
  const file = header[1]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  let problems = details.split('\n').slice(1);
  // A message cut at its bound (grpcError) ends in a partial line.
  const cut = / characters cut\)$/.test(details);
  if (cut) problems = problems.slice(0, -1);
  return (
    (cut || problems.length === Number(header[2])) &&
    problems.every((line) => new RegExp(`^  ${file}(?::\\d+:\\d+: |: ${path}: |: expected a mapping)`).test(line))
  );
}

let work: string;
const stops: Array<() => Promise<void>> = [];
const clients = new Map<string, grpc.Client>();
const methods: Method[] = [];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'tl-grpc-fuzz-'));
  const store = new LocalFolderStore(join(work, 'store'));
  const bus = createInProcessBus();
  const log = createLogger('grpc-fuzz', { level: 'silent' });
  const controller = new SweepController({ store, bus, steps: refusingSteps, executor: refusingExecutor });
  const registrations = [
    sweepServiceRegistration(controllerServer({ controller, store, log, dataDir: work })),
    {
      name: 'transferlab.v1.DatasetSplitterService',
      definition: DatasetSplitterServiceService,
      implementation: splitterServer({ store, bus, log, dataRoot: work }),
    },
    {
      name: 'transferlab.v1.TransplanterService',
      definition: TransplanterServiceService,
      implementation: transplanterServer({ store, bus, log }),
    },
    {
      name: 'transferlab.v1.EvaluatorService',
      definition: EvaluatorServiceService,
      implementation: evaluatorServer({ store, bus, log }),
    },
  ];
  const definitions = grpc.loadPackageDefinition(
    loadSync(PROTO_FILES, { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String }),
  );
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/') ? target : join(PROTO_ROOT, target));
  root.loadSync(PROTO_FILES, { keepCase: true });
  root.resolveAll();
  const listening: Array<{ name: string; port: number }> = [];
  for (const registration of registrations) {
    const server = await startGrpcServer({
      services: [registration as Parameters<typeof startGrpcServer>[0]['services'][number]],
      port: 0,
      log,
    });
    stops.push(() => server.shutdown(1000));
    listening.push({ name: registration.name, port: server.port });
  }
  for (const registration of listening) {
    const Client = registration.name
      .split('.')
      .reduce<unknown>(
        (node, part) => (node as Record<string, unknown>)[part],
        definitions,
      ) as grpc.ServiceClientConstructor;
    clients.set(registration.name, new Client(`127.0.0.1:${registration.port}`, grpc.credentials.createInsecure()));
    for (const method of root.lookupService(registration.name).methodsArray) {
      method.resolve();
      methods.push({
        service: registration.name,
        name: method.name,
        streaming: Boolean(method.responseStream),
        request: message(method.resolvedRequestType!),
      });
    }
  }
}, 60_000);

afterAll(async () => {
  for (const client of clients.values()) client.close();
  for (const stop of stops) await stop();
  await rm(work, { recursive: true, force: true });
});

/** The FAKE substitutions the header explains, so a case never starts real work. */
function defuse(method: Method, request: Record<string, unknown>): Record<string, unknown> {
  // A valid sweep of thousands of cells is only checked: starting it writes every cell.
  if (method.name === 'StartSweep' && typeof request.spec_text === 'string' && !request.validate_only) {
    try {
      if (plannedCellCount(parseSpec(request.spec_text, 'fuzz')) > 20) return { ...request, validate_only: true };
    } catch {
      // Invalid: the server says so.
    }
  }
  if (method.name === 'CreateSplit') {
    const dataset = request.dataset as Record<string, unknown> | undefined;
    if (dataset && 'mnist' in dataset) return { ...request, dataset: { cifar10: { path: 'not-there' } } };
  }
  return request;
}

function call(method: Method, request: Record<string, unknown>): Promise<Answer> {
  const client = clients.get(method.service)! as unknown as Record<string, (...args: unknown[]) => unknown>;
  const deadline = Date.now() + 10_000;
  return new Promise((resolve) => {
    if (!method.streaming) {
      client[method.name]!.call(client, request, { deadline }, (error: grpc.ServiceError | null) =>
        resolve(error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: '' }),
      );
      return;
    }
    const stream = client[method.name]!.call(client, request, { deadline }) as grpc.ClientReadableStream<unknown>;
    let answered = false;
    const answer = (value: Answer): void => {
      if (answered) return;
      answered = true;
      resolve(value);
    };
    // A stream that started answering works: the fuzz needs its first message or its error only.
    stream.on('data', () => {
      answer({ code: grpc.status.OK, details: '' });
      stream.cancel();
    });
    stream.on('error', (error: grpc.ServiceError) => answer({ code: error.code, details: error.details }));
    stream.on('end', () => answer({ code: grpc.status.OK, details: '' }));
  });
}

describe('gRPC request fuzz', () => {
  it(`answers ${GRPC_FUZZ_RUNS} hostile requests across every RPC with no crash`, async () => {
    expect(methods.map((m) => m.name).sort()).toEqual(
      [
        'CancelSweep',
        'CreateSplit',
        'Evaluate',
        'GetReport',
        'GetSplit',
        'GetSweep',
        'ListSweeps',
        'Measure',
        'StartSweep',
        'Transplant',
        'WatchSweep',
      ].sort(),
    );
    const byMethod = new Map<string, Record<string, number>>();
    const crashes: string[] = [];
    const unnamed: string[] = [];
    const slow: string[] = [];
    let previous = '';
    const anyCall = fc.oneof(...methods.map((method) => method.request.map((request) => ({ method, request }))));
    await fc.assert(
      fc.asyncProperty(anyCall, async ({ method, request }) => {
        const begun = performance.now();
        const answer = await call(method, defuse(method, request));
        const ms = performance.now() - begun;
        if (ms > 500) slow.push(`${method.name} ${Math.round(ms)} ms after ${previous}`);
        previous = `${method.name} ${grpc.status[answer.code]} ${JSON.stringify(request).length} chars ${answer.details.slice(0, 100)}`;
        const tally = byMethod.get(method.name) ?? {};
        tally[grpc.status[answer.code]] = (tally[grpc.status[answer.code]] ?? 0) + 1;
        byMethod.set(method.name, tally);
        const where = `${method.name}: ${grpc.status[answer.code]}: ${answer.details.slice(0, 300)}`;
        if (CRASH.has(answer.code)) crashes.push(where);
        if (answer.code === grpc.status.INVALID_ARGUMENT && !namesField(answer.details)) unnamed.push(where);
        expect(answer.details.length).toBeLessThan(2100);
      }),
      { numRuns: GRPC_FUZZ_RUNS, seed: Number(process.env.TRANSFERLAB_FUZZ_SEED ?? Date.now() % 2 ** 31) },
    );
    console.log(
      `grpc fuzz: ${GRPC_FUZZ_RUNS} cases, ${crashes.length} crashes, ${unnamed.length} INVALID_ARGUMENT without a field`,
    );
    for (const [name, tally] of [...byMethod].sort()) console.log(`  ${name}: ${JSON.stringify(tally)}`);
    console.log(slow.slice(0, 10).join('\n'));
    expect([...new Set(unnamed.map((text) => text.slice(0, 120)))].slice(0, 30)).toEqual([]);
    expect(crashes.slice(0, 10)).toEqual([]);
  }, 300_000);
});

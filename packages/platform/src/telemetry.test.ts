import { hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callUnary } from './grpc/client.ts';
import { startGrpcServer, unaryHandler } from './grpc/server.ts';
import { createInProcessBus } from './in-process-bus.ts';
import { createLogger } from './logger.ts';
import { cellProgressSubject } from './subjects.ts';
import { PROM } from './telemetry-attributes.ts';
import { currentTraceparent, withSpan } from './telemetry-context.ts';
import { SweepMetrics, TrainingMetrics } from './telemetry-instruments.ts';
import { type Telemetry, serviceInstanceId, startTelemetry } from './telemetry.ts';

const json = {
  serialize: (value: unknown) => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer) => JSON.parse(bytes.toString()) as unknown,
};
function method(name: string, responseStream: boolean) {
  return {
    path: `/test.Echo/${name}`,
    originalName: name,
    requestStream: false,
    responseStream,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  };
}
const EchoService: grpc.ServiceDefinition = {
  Echo: method('Echo', false),
  Fail: method('Fail', false),
  Watch: method('Watch', true),
};
type Unary = (
  request: unknown,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (error: grpc.ServiceError | null, response: never) => void,
) => grpc.ClientUnaryCall;
type EchoClient = grpc.Client & {
  Echo: Unary;
  Fail: Unary;
  Watch: (request: unknown) => grpc.ClientReadableStream<unknown>;
};
const traceId = (traceparent: string | undefined): string | undefined => traceparent?.split('-')[1];

describe('telemetry', () => {
  let telemetry: Telemetry;
  const scrape = async (): Promise<string> => {
    const response = await fetch(`http://127.0.0.1:${telemetry.metricsPort}/metrics`);
    expect(response.status).toBe(200);
    return response.text();
  };

  beforeAll(async () => {
    telemetry = await startTelemetry({ service: 'test', metricsPort: 0, env: {} });
  });
  afterAll(async () => {
    await telemetry?.shutdown();
  });

  it('refuses a second start in one process', async () => {
    await expect(startTelemetry({ service: 'again', metricsPort: 'off', env: {} })).rejects.toThrow(/once/);
  });

  it('serves the sweep and training metrics under their registry names; a finished run leaves no gauge', async () => {
    const sweep = new SweepMetrics(telemetry.meter);
    const training = new TrainingMetrics(telemetry.meter);
    const cell = { arm: 'AnB+', n: 3, seed: 1 };
    sweep.cellCounts('s1', { pending: 2, training: 1 });
    sweep.cellFinished('s1', cell, 'succeeded', 42);
    sweep.cellScore('s1', { arm: 'baseB', seed: 1 }, 0.61);
    const run = training.cell('s1', cell, 'wasm');
    run.progress({ loss: 1.5, imagesPerSecond: 90 });
    run.progress({ valTop1: 0.4, epochDone: true, epochSeconds: 12 });
    run.checkpoint({ bytes: 3_000_000, seconds: 0.2 });

    let text = await scrape();
    expect(text).toContain(`${PROM.cells}{sweep="s1",state="pending"} 2`);
    expect(text).toContain(`${PROM.cellDuration}_bucket{arm="AnB+",state="succeeded",le="60"} 1`);
    expect(text).toContain(`${PROM.cellScore}{sweep="s1",arm="baseB",n="0",seed="1"} 0.61`);
    expect(text).toContain(`${PROM.trainingLoss}{sweep="s1",arm="AnB+",n="3",seed="1",backend="wasm"} 1.5`);
    expect(text).toContain(`${PROM.validationTop1}{sweep="s1",arm="AnB+",n="3",seed="1",backend="wasm"} 0.4`);
    expect(text).toContain(`${PROM.imagesPerSecond}{sweep="s1",arm="AnB+",n="3",seed="1",backend="wasm"} 90`);
    expect(text).toContain(`${PROM.epochDuration}_count{arm="AnB+",backend="wasm"} 1`);
    expect(text).toContain(`${PROM.checkpointSize}_sum{arm="AnB+",backend="wasm"} 3000000`);
    expect(text).toContain('target_info{');
    // Every process says which one it is: hostname-pid here, the pod's name in a pod.
    expect(text).toContain(`service_instance_id="${hostname()}-${process.pid}"`);
    expect(serviceInstanceId({ KUBERNETES_SERVICE_HOST: '10.0.0.1' })).toBe(hostname());

    run.end();
    text = await scrape();
    expect(text).not.toContain(`${PROM.trainingLoss}{`);
    expect(text).toContain(`${PROM.checkpointDuration}_count{arm="AnB+",backend="wasm"} 1`);
  });

  it('waits for the next scrape once something scrapes the endpoint', async () => {
    const waiting = telemetry.awaitScrapes(1, 10_000);
    let woke = false;
    void waiting.then(() => (woke = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(woke).toBe(false);
    await scrape();
    await waiting;
  });

  it('carries the trace context through bus headers: a subscriber runs in the publisher’s trace', async () => {
    const bus = createInProcessBus();
    const seen: Array<{ header?: string; active?: string }> = [];
    await bus.subscribe('transferlab.cell.>', (message) => {
      seen.push({ header: message.headers.traceparent, active: currentTraceparent() });
    });
    let published: string | undefined;
    await withSpan('publisher', {}, async () => {
      published = currentTraceparent();
      await bus.publish(cellProgressSubject('s1', 'c1'), { ok: true });
    });
    const explicit = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    await bus.publish(cellProgressSubject('s1', 'c2'), {}, { headers: { traceparent: explicit } });
    await expect.poll(() => seen.length).toBe(2);
    expect(published).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(seen[0]).toEqual({ header: published, active: published });
    expect(seen[1]!.header).toBe(explicit);
    await bus.close();
  });

  it('continues a trace across gRPC and counts calls by method and code', async () => {
    const log = createLogger('telemetry-test', { level: 'warn' });
    const server = await startGrpcServer({
      services: [
        {
          name: 'test.Echo',
          definition: EchoService,
          implementation: {
            Echo: unaryHandler(async () => ({ traceparent: currentTraceparent() }), log),
            Fail: unaryHandler(async () => {
              throw Object.assign(new Error('no such thing'), { code: grpc.status.NOT_FOUND });
            }, log),
            Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
              call.write({ n: 1 });
              call.end();
            },
          },
        },
      ],
      port: 0,
      log,
    });
    const Client = grpc.makeGenericClientConstructor(EchoService, 'Echo');
    const client = new Client(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
    try {
      let caller: string | undefined;
      const response = await withSpan('caller', {}, async () => {
        caller = currentTraceparent();
        return callUnary<unknown, { traceparent?: string }>(client.Echo.bind(client), {});
      });
      expect(traceId(response.traceparent)).toBe(traceId(caller));
      expect(response.traceparent).not.toBe(caller);
      await expect(callUnary(client.Fail.bind(client), {})).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
      const stream = client.Watch({});
      for await (const _message of stream) void _message;

      const text = await scrape();
      const count = (name: string, code: number) =>
        `${PROM.rpcServerDuration}_count{rpc_service="test.Echo",rpc_method="${name}",rpc_grpc_status_code="${code}"} 1`;
      expect(text).toContain(count('Echo', 0));
      expect(text).toContain(count('Fail', grpc.status.NOT_FOUND));
      expect(text).toContain(count('Watch', 0));
      expect(text).not.toContain('rpc_service="grpc.health.v1.Health"');
    } finally {
      client.close();
      await server.shutdown();
    }
  });
});

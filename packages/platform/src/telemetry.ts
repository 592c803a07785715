/**
 * OpenTelemetry for a transferlab process, set up once at start-up (the first thing a
 * service's main.ts does) and shut down last:
 *
 * - metrics: a Prometheus endpoint, `GET /metrics` on TRANSFERLAB_METRICS_HOST (else
 *   TRANSFERLAB_HOST, else 127.0.0.1) and TRANSFERLAB_METRICS_PORT (default 9464; 0 = any free
 *   port; `off` = none);
 * - traces: W3C trace context carried by gRPC metadata and NATS headers (telemetry-context.ts,
 *   telemetry-grpc.ts), spans kept in memory only unless an OTLP endpoint is configured;
 * - OTLP/HTTP (JSON) export of traces and metrics when OTEL_EXPORTER_OTLP_ENDPOINT (or the
 *   per-signal OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT) is set, or `otlpEndpoint` is given;
 *   OTEL_BSP_SCHEDULE_DELAY and OTEL_METRIC_EXPORT_INTERVAL (ms) set how often.
 *
 * Recording code gets its instruments from `meter` (telemetry-instruments.ts); names live in
 * telemetry-attributes.ts.
 */
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { type Meter, type Tracer, context, metrics, propagation, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-http';
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { detectResources, envDetector, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  InstrumentType,
  type InstrumentType as InstrumentTypeValue,
  MeterProvider,
  MetricReader,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
// Still "incubating" in the semantic conventions package: its stable entry point lacks it.
const ATTR_SERVICE_INSTANCE_ID = 'service.instance.id';
import { INSTRUMENTATION_SCOPE } from './telemetry-context.ts';

export const DEFAULT_METRICS_PORT = 9464;

export interface TelemetryOptions {
  /** The service's name, e.g. `controller`: the resource's service.name. */
  service: string;
  /** Default TRANSFERLAB_METRICS_PORT, else 9464. 0 = a free port; 'off' = no endpoint. */
  metricsPort?: number | 'off';
  /** Default TRANSFERLAB_METRICS_HOST, else TRANSFERLAB_HOST, else 127.0.0.1. */
  metricsHost?: string;
  /** OTLP/HTTP base URL, e.g. http://otel-collector:4318. Default OTEL_EXPORTER_OTLP_ENDPOINT. */
  otlpEndpoint?: string;
  env?: NodeJS.ProcessEnv;
}

export interface Telemetry {
  meter: Meter;
  tracer: Tracer;
  /** The bound Prometheus port, or undefined when the endpoint is off. */
  metricsPort: number | undefined;
  /**
   * For a short-lived process: when something has scraped /metrics before, waits for `count`
   * more scrapes (so the last values are seen; two give a rate() its two samples), each at most
   * twice the interval seen between scrapes, all at most `capMs`. Returns at once when nothing
   * scrapes this process.
   */
  awaitScrapes(count?: number, capMs?: number): Promise<void>;
  /** Flushes and stops exporters, closes the endpoint, unregisters the SDK. Idempotent. */
  shutdown(): Promise<void>;
}

/** Gauges are exported as observed at this collection; counters and histograms are cumulative. */
function temporality(type: InstrumentTypeValue): AggregationTemporality {
  return type === InstrumentType.OBSERVABLE_GAUGE ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE;
}

/** The pull reader behind /metrics. */
class ScrapeReader extends MetricReader {
  constructor() {
    super({ aggregationTemporalitySelector: temporality });
  }
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

function parseMetricsPort(value: number | string | undefined): number | 'off' {
  if (value === undefined || value === '') return DEFAULT_METRICS_PORT;
  if (value === 'off') return 'off';
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`TRANSFERLAB_METRICS_PORT: expected a port (0..65535) or 'off', got '${value}'`);
  }
  return port;
}

let active: Telemetry | undefined;

export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  if (active) throw new Error('telemetry is already started in this process: start it once, in main');
  const env = options.env ?? process.env;
  const metricsPort = parseMetricsPort(options.metricsPort ?? env.TRANSFERLAB_METRICS_PORT);
  const metricsHost = options.metricsHost || env.TRANSFERLAB_METRICS_HOST || env.TRANSFERLAB_HOST || '127.0.0.1';
  const otlp = options.otlpEndpoint ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  const otlpUrl = (signal: 'traces' | 'metrics'): string | undefined =>
    options.otlpEndpoint ? `${options.otlpEndpoint.replace(/\/+$/, '')}/v1/${signal}` : undefined;
  const otlpTraces = Boolean(otlp || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
  const otlpMetrics = Boolean(otlp || env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT);

  // service.instance.id tells apart the processes of one service (two trainers, a restarted
  // controller): OTEL_RESOURCE_ATTRIBUTES wins over ours.
  const resource = resourceFromAttributes({ [ATTR_SERVICE_INSTANCE_ID]: serviceInstanceId(env) })
    .merge(detectResources({ detectors: [envDetector] }))
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.service, 'service.namespace': 'transferlab' }));

  const tracerProvider = new NodeTracerProvider({
    resource,
    spanProcessors: otlpTraces
      ? [
          new BatchSpanProcessor(new OTLPTraceExporter({ url: otlpUrl('traces') }), {
            scheduledDelayMillis: Number(env.OTEL_BSP_SCHEDULE_DELAY) || undefined,
          }),
        ]
      : [],
  });
  // Registers AsyncLocalStorage as the context manager, so the active span follows async code.
  tracerProvider.register({ propagator: new W3CTraceContextPropagator() });

  const scrape = metricsPort === 'off' ? undefined : new ScrapeReader();
  const readers: MetricReader[] = scrape ? [scrape] : [];
  if (otlpMetrics) {
    const exporter = new OTLPMetricExporter({ url: otlpUrl('metrics') });
    const push: PushMetricExporter = {
      export: (data, done) => exporter.export(data, done),
      forceFlush: () => exporter.forceFlush(),
      shutdown: () => exporter.shutdown(),
      selectAggregationTemporality: temporality,
    };
    const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL) || 60_000;
    readers.push(new PeriodicExportingMetricReader({ exporter: push, exportIntervalMillis: interval }));
  }
  const meterProvider = new MeterProvider({ resource, readers });
  metrics.setGlobalMeterProvider(meterProvider);

  let server: Server | undefined;
  let boundPort: number | undefined;
  // Scrapes seen, and who waits for one: a waiter is woken by a scrape that collected after it began waiting.
  const scrapes = { count: 0, lastAt: 0, intervalMs: 0, waiters: [] as Array<{ since: number; wake: () => void }> };
  if (scrape && metricsPort !== 'off') {
    const port = metricsPort;
    const serializer = new PrometheusSerializer(undefined, false, undefined, false, true);
    const handle = (request: IncomingMessage, response: ServerResponse): void => {
      const path = (request.url ?? '/').split('?')[0];
      if (request.method !== 'GET' || path !== '/metrics') {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      const collectedAt = performance.now();
      scrape.collect().then(
        ({ resourceMetrics, errors }) => {
          for (const error of errors) process.emitWarning(`metrics collection: ${String(error)}`);
          response
            .writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' })
            .end(serializer.serialize(resourceMetrics), () => {
              const now = Date.now();
              if (scrapes.count > 0) scrapes.intervalMs = now - scrapes.lastAt;
              scrapes.count += 1;
              scrapes.lastAt = now;
              const woken = scrapes.waiters.filter((waiter) => waiter.since <= collectedAt);
              scrapes.waiters = scrapes.waiters.filter((waiter) => waiter.since > collectedAt);
              for (const waiter of woken) waiter.wake();
            });
        },
        (error: unknown) => {
          response.writeHead(500, { 'content-type': 'text/plain' }).end(`# collection failed: ${String(error)}\n`);
        },
      );
    };
    const listening = createServer(handle);
    await new Promise<void>((resolve, reject) => {
      listening.once('error', (error) =>
        reject(new Error(`cannot serve metrics on ${metricsHost}:${port}: ${error.message}`, { cause: error })),
      );
      listening.listen(port, metricsHost, () => resolve());
    }).catch(async (error: unknown) => {
      await Promise.allSettled([meterProvider.shutdown(), tracerProvider.shutdown()]);
      disableGlobals();
      throw error;
    });
    server = listening;
    boundPort = (listening.address() as AddressInfo).port;
  }

  let stopped: Promise<void> | undefined;
  const telemetry: Telemetry = {
    meter: meterProvider.getMeter(INSTRUMENTATION_SCOPE),
    tracer: tracerProvider.getTracer(INSTRUMENTATION_SCOPE),
    metricsPort: boundPort,
    awaitScrapes: async (count = 1, capMs = 20_000) => {
      if (!server || scrapes.count === 0) return;
      const until = Date.now() + capMs;
      for (let i = 0; i < count && Date.now() < until; i++) {
        const waitMs = Math.min(until - Date.now(), 2 * Math.max(scrapes.intervalMs, 1000) + 500);
        const next = await new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), waitMs);
          scrapes.waiters.push({
            since: performance.now(),
            wake: () => {
              clearTimeout(timer);
              resolve(true);
            },
          });
        });
        if (!next) return;
      }
    },
    shutdown: () => {
      stopped ??= (async () => {
        for (const waiter of scrapes.waiters.splice(0)) waiter.wake();
        if (server) {
          const closing = new Promise<void>((resolve) => server!.close(() => resolve()));
          server.closeAllConnections();
          await closing;
        }
        await Promise.allSettled([meterProvider.shutdown(), tracerProvider.shutdown()]);
        disableGlobals();
        active = undefined;
      })();
      return stopped;
    },
  };
  active = telemetry;
  return telemetry;
}

/**
 * This process among its service's: in a pod, the pod's name (its hostname; one transferlab
 * process per pod), else hostname and PID (several trainer processes share a machine).
 */
export function serviceInstanceId(env: NodeJS.ProcessEnv = process.env): string {
  return env.KUBERNETES_SERVICE_HOST ? hostname() : `${hostname()}-${process.pid}`;
}

function disableGlobals(): void {
  metrics.disable();
  trace.disable();
  propagation.disable();
  context.disable();
}

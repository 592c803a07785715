// Telemetry end to end: every service as a process serving Prometheus metrics, a real
// Prometheus scraping them (and the trainers the controller starts) every second, a tiny sweep,
// then every Grafana dashboard expression evaluated against that Prometheus. The expressions
// are those of deploy/grafana/dashboards.ts, the same ones deploy/prometheus/ holds as rules.
// The services also export traces over OTLP/HTTP to a receiver here, which checks that the
// sweep is one trace across the controller, the services and the trainers.
import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RULES_FILE, dashboardExpressions, variableQueries } from '../deploy/grafana/dashboards.ts';
import { REPO, type RealServers, freePort, realServers } from './support/servers.ts';
import { SERVICES, type Services, TINY_SPEC, startServices } from './support/services.ts';

const run = promisify(execFile);

/** What the OTLP/HTTP JSON exporters send, as far as this test reads it. */
interface KeyValue {
  key: string;
  value: { stringValue?: string; intValue?: string | number };
}
interface ExportedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes: Record<string, string | number | undefined>;
}

/** A minimal OTLP/HTTP receiver: keeps the spans and the names of the metrics it is sent. */
async function otlpReceiver(): Promise<{
  url: string;
  spans: ExportedSpan[];
  metrics: Set<string>;
  close(): Promise<void>;
}> {
  const spans: ExportedSpan[] = [];
  const metrics = new Set<string>();
  const attributes = (list: KeyValue[] = []) =>
    Object.fromEntries(list.map(({ key, value }) => [key, value.stringValue ?? value.intValue]));
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as {
        resourceSpans?: Array<{
          resource?: { attributes?: KeyValue[] };
          scopeSpans?: Array<{
            spans?: Array<Omit<ExportedSpan, 'service' | 'attributes'> & { attributes?: KeyValue[] }>;
          }>;
        }>;
        resourceMetrics?: Array<{ scopeMetrics?: Array<{ metrics?: Array<{ name: string }> }> }>;
      };
      for (const resource of body.resourceSpans ?? []) {
        const service = String(attributes(resource.resource?.attributes)['service.name']);
        for (const scope of resource.scopeSpans ?? []) {
          for (const span of scope.spans ?? [])
            spans.push({ ...span, service, attributes: attributes(span.attributes) });
        }
      }
      for (const resource of body.resourceMetrics ?? []) {
        for (const scope of resource.scopeMetrics ?? [])
          for (const metric of scope.metrics ?? []) metrics.add(metric.name);
      }
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    metrics,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/**
 * A fake DCGM exporter (NVIDIA's GPU metrics): this machine has no GPU, so nothing real can serve
 * them. It serves the two series the GPU panels read, labelled as the real exporter labels a
 * trainer pod's GPU with its Kubernetes mapping on, so that those panels' expressions are
 * evaluated against data like the rest.
 */
async function fakeDcgmExporter(): Promise<{ target: string; close(): Promise<void> }> {
  const labels =
    'gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000",device="nvidia0",modelName="NVIDIA A100-SXM4-40GB",' +
    'Hostname="gpu-node-1",namespace="transferlab",pod="tl-telemetry-0a1b2c3d-0123456789-a1-x7k2p",container="trainer"';
  const server: Server = createServer((_request, response) => {
    response
      .writeHead(200, { 'content-type': 'text/plain; version=0.0.4' })
      .end(
        `# TYPE DCGM_FI_DEV_GPU_UTIL gauge\nDCGM_FI_DEV_GPU_UTIL{${labels}} 87\n` +
          `# TYPE DCGM_FI_DEV_FB_USED gauge\nDCGM_FI_DEV_FB_USED{${labels}} 30512\n`,
      );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    target: `dcgm-exporter=127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

interface PromResponse {
  status: string;
  error?: string;
  data: { resultType: string; result: Array<{ metric: Record<string, string> }> };
}

describe('telemetry end to end', () => {
  let servers: RealServers;
  let services: Services;
  let otlp: Awaited<ReturnType<typeof otlpReceiver>>;
  let dcgm: Awaited<ReturnType<typeof fakeDcgmExporter>> | undefined;
  let sweepId = '';
  let prometheusDir = '';
  let prometheus = '';
  let work = '';

  const query = async (path: string, params: Record<string, string>): Promise<PromResponse> => {
    const response = await fetch(`${prometheus}${path}?${new URLSearchParams(params)}`);
    const body = (await response.json()) as PromResponse;
    if (body.status !== 'success') throw new Error(`${path} ${params.query}: ${body.error ?? response.status}`);
    return body;
  };
  const instant = (promql: string) => query('/api/v1/query', { query: promql });

  beforeAll(async () => {
    servers = await realServers();
    work = await mkdtemp(join(tmpdir(), 'tl-telemetry-'));
    otlp = await otlpReceiver();
    services = await startServices({
      servers,
      name: 'telemetry',
      metrics: true,
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_BSP_SCHEDULE_DELAY: '200',
        OTEL_METRIC_EXPORT_INTERVAL: '1000',
      },
    });
    prometheusDir = join(work, 'prometheus');
    const { stdout } = await run(
      'bash',
      [
        join(REPO, 'scripts/prometheus-start.sh'),
        prometheusDir,
        String(await freePort()),
        ...services.metricsTargets,
        (dcgm = await fakeDcgmExporter()).target,
      ],
      { timeout: 180_000 },
    );
    prometheus = /^TRANSFERLAB_PROMETHEUS_URL=(\S+)$/m.exec(stdout)?.[1] ?? '';
    expect(prometheus, stdout).toMatch(/^http:/);
  }, 240_000);

  afterAll(async () => {
    if (prometheusDir) await run('bash', [join(REPO, 'scripts/prometheus-stop.sh'), prometheusDir]).catch(() => {});
    await services?.stop();
    await servers?.stop();
    await otlp?.close();
    await dcgm?.close();
  }, 60_000);

  it('every dashboard expression passes promtool check rules', async () => {
    const { stdout } = await run('promtool', ['check', 'rules', join(REPO, RULES_FILE)]);
    expect(stdout).toContain(`SUCCESS: ${dashboardExpressions().length} rules found`);
  });

  it('scrapes every service; after a sweep, every dashboard expression returns data', async () => {
    // The first scrape lands a few seconds after Prometheus starts.
    const services_ = SERVICES.map((name) => `service="${name}"`);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const up = await instant(`up{service!="trainer"} == 1`);
      const seen = new Set(up.data.result.map((series) => series.metric.service));
      if (SERVICES.every((name) => seen.has(name))) break;
      if (Date.now() > deadline) throw new Error(`not every service is up: ${services_} vs ${[...seen]}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }

    const started = Date.now() / 1000;
    await writeFile(join(work, 'tiny.yaml'), TINY_SPEC.replace('name: e2e', 'name: telemetry'));
    const cli = join(REPO, 'services/cli/bin/transferlab.js');
    const { stdout } = await run(
      process.execPath,
      [
        cli,
        'sweep',
        'start',
        '-f',
        'tiny.yaml',
        '--server',
        services.controllerAddress,
        '--watch',
        '--progress',
        'lines',
      ],
      { cwd: work, env: { ...process.env, ...services.env }, timeout: 300_000 },
    ).catch((error: { stdout: string; stderr: string; message: string }) => {
      throw new Error(`${error.message}\n${error.stdout}\n${error.stderr}\n${services.logs()}`);
    });
    sweepId = /sweep ([a-z0-9-]+-[0-9a-f]{8})/.exec(stdout)?.[1] ?? '';
    expect(sweepId, stdout).not.toBe('');
    // Two more scrapes of the controller, so rates over its last values have their samples.
    await new Promise((resolve) => setTimeout(resolve, 2500));

    // The trainers served metrics while they ran: their targets were up at some point.
    const trainers = await instant(`max_over_time(up{service="trainer"}[10m]) == 1`);
    expect(trainers.data.result.length, 'a trainer target was scraped').toBeGreaterThan(0);

    // As Grafana runs them: stat, table and bar chart panels ask for the value now, time series
    // panels for the time range (here: the sweep's).
    const end = Date.now() / 1000;
    const empty: string[] = [];
    for (const expression of dashboardExpressions()) {
      const result = expression.instant
        ? await instant(expression.promql)
        : await query('/api/v1/query_range', {
            query: expression.promql,
            start: String(Math.floor(started) - 5),
            end: String(Math.ceil(end)),
            step: '1',
          });
      if (result.data.result.length === 0) {
        empty.push(`${expression.dashboard} / ${expression.panel} (${expression.refId}): ${expression.promql}`);
      }
    }
    expect(empty, 'dashboard expressions without data').toEqual([]);

    // The dashboards' variables (sweep, arm, service) offer values too.
    const window = { start: String(Math.floor(started) - 5), end: String(Math.ceil(end)) };
    const noValues: string[] = [];
    for (const variable of variableQueries()) {
      const response = await fetch(
        `${prometheus}/api/v1/label/${variable.label}/values?${new URLSearchParams({ 'match[]': variable.selector, ...window })}`,
      );
      const values = ((await response.json()) as { data?: string[] }).data ?? [];
      if (values.length === 0) noValues.push(`${variable.dashboard} $${variable.variable}: ${variable.selector}`);
    }
    expect(noValues, 'dashboard variables without values').toEqual([]);
  }, 300_000);

  it('exports one trace per sweep across the controller, the services and the trainers over OTLP', async () => {
    expect(sweepId, 'the sweep ran (previous test)').not.toBe('');
    // Spans leave in batches every 200 ms; the trainers flushed theirs before they exited.
    await expect
      .poll(
        () =>
          otlp.spans.filter((span) => span.name === 'sweep' && span.attributes['transferlab.sweep.id'] === sweepId)
            .length,
        { timeout: 10_000 },
      )
      .toBe(1);
    const sweep = otlp.spans.find(
      (span) => span.name === 'sweep' && span.attributes['transferlab.sweep.id'] === sweepId,
    )!;
    const trace = otlp.spans.filter((span) => span.traceId === sweep.traceId);
    const by = (service: string, name: string) =>
      trace.filter((span) => span.service === service && span.name === name);
    expect(by('controller', 'transferlab.v1.SweepService/StartSweep')).toHaveLength(1);
    // Six cells, one span per attempt (a retried cell has more).
    expect(by('controller', 'cell').length).toBeGreaterThanOrEqual(6);
    expect(by('dataset-splitter', 'transferlab.v1.DatasetSplitterService/CreateSplit').length).toBeGreaterThan(0);
    expect(by('transplanter', 'transferlab.v1.TransplanterService/Transplant').length).toBeGreaterThanOrEqual(4);
    expect(by('evaluator', 'transferlab.v1.EvaluatorService/Evaluate').length).toBeGreaterThanOrEqual(6);
    const runs = by('trainer', 'run-cell');
    expect(runs.length).toBeGreaterThanOrEqual(6);
    // Each trainer's run is a child of its cell's span in the controller.
    const cells = new Set(by('controller', 'cell').map((span) => span.spanId));
    expect(runs.every((span) => span.parentSpanId !== undefined && cells.has(span.parentSpanId))).toBe(true);
    // And metrics went out over OTLP too.
    expect([...otlp.metrics]).toEqual(
      expect.arrayContaining(['transferlab.cells', 'transferlab.rpc.server.duration_seconds']),
    );
  }, 60_000);
});

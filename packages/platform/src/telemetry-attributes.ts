/**
 * The one registry of telemetry names: metric names, their units, buckets and labels, and the
 * attribute names of spans and metrics. Recording code, the Grafana dashboards
 * (deploy/grafana/dashboards.ts) and the Prometheus rules all take their names from here.
 *
 * Metric labels are bounded: a sweep has a known set of cells, and arm, n, seed, state and
 * backend take few values. Cell ids, subjects and error texts go on spans, never on metrics.
 * Histograms never carry the sweep id: a histogram's series live as long as the process, and
 * sweep ids grow without end; the per-cell gauges that carry it are dropped when the cell ends.
 *
 * Instrument names carry their unit (`_seconds`, `_bytes`) because the Prometheus exporter
 * turns dots into underscores and adds no unit suffix: `transferlab.cell.duration_seconds` is
 * scraped as `transferlab_cell_duration_seconds`.
 */

/** Metric labels (and the span attributes of the same meaning). */
export const LABELS = {
  /** Sweep id, e.g. `demo-1a2b3c4d`. */
  sweep: 'sweep',
  /** Figure 2's line: baseA, baseB, AnB, BnB+, ... */
  arm: 'arm',
  /** Layers copied, 1..7; "0" for base cells, which copy none. */
  n: 'n',
  seed: 'seed',
  /** A cell state: pending, transplanting, training, evaluating, succeeded, failed, blocked, cancelled. */
  state: 'state',
  /** The trainer's compute backend: tensorflow-gpu, tensorflow, wasm or cpu (packages/nn/src/backend.ts). */
  backend: 'backend',
  /** Set by the scrape configuration (a ServiceMonitor sets it to the Kubernetes Service), not by the services. */
  service: 'service',
} as const;

/** Span and RPC attribute names (OpenTelemetry semantic conventions where one exists). */
export const ATTRIBUTES = {
  sweepId: 'transferlab.sweep.id',
  cellId: 'transferlab.cell.id',
  cellName: 'transferlab.cell.name',
  attempt: 'transferlab.cell.attempt',
  rpcSystem: 'rpc.system',
  rpcService: 'rpc.service',
  rpcMethod: 'rpc.method',
  rpcGrpcStatusCode: 'rpc.grpc.status_code',
} as const;

export type MetricKind = 'gauge' | 'histogram' | 'counter';

export interface MetricSpec {
  /** The OpenTelemetry instrument name. */
  readonly name: string;
  readonly kind: MetricKind;
  readonly unit: string;
  readonly description: string;
  /** The attributes a recording sets: no others. */
  readonly labels: readonly string[];
  /** Histogram bucket boundaries, in the metric's unit. */
  readonly buckets?: readonly number[];
}

/** The name Prometheus stores: dots become underscores; counters get `_total`. */
export function prometheusName(metric: MetricSpec): string {
  const base = metric.name.replace(/[^a-zA-Z0-9_:]/g, '_');
  return metric.kind === 'counter' ? `${base}_total` : base;
}

const CELL_LABELS = [LABELS.sweep, LABELS.arm, LABELS.n, LABELS.seed] as const;
const TRAINING_LABELS = [...CELL_LABELS, LABELS.backend] as const;

export const METRICS = {
  /** From the controller: every cell of every sweep it drives, by state. */
  cells: {
    name: 'transferlab.cells',
    kind: 'gauge',
    unit: '{cell}',
    description: 'Cells of a sweep by state',
    labels: [LABELS.sweep, LABELS.state],
  },
  /** From the controller: cells ready to run (every dependency succeeded) that wait for a slot. */
  queueDepth: {
    name: 'transferlab.sweep.queue_depth',
    kind: 'gauge',
    unit: '{cell}',
    description: 'Pending cells of a sweep whose dependencies all succeeded, waiting for a free slot',
    labels: [LABELS.sweep],
  },
  /** From the controller: first attempt's start to the final state, for cells that ran (reused cells do not count). */
  cellDuration: {
    name: 'transferlab.cell.duration_seconds',
    kind: 'histogram',
    unit: 's',
    description: 'Wall time of a cell from its first attempt to succeeded or failed, retries included',
    labels: [LABELS.arm, LABELS.state],
    buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 28_800, 86_400, 259_200, 864_000],
  },
  /**
   * From the controller: a cell's ready (its last dependency succeeded; the sweep's splits ready
   * for a cell without any; a failed attempt handed back; for a cell that waited for a free slot
   * under the concurrency limit, a slot freed) to its launch (the executor asked to run it, or
   * the measure step called): the scheduler's own delay. Waits for a slot show as queue depth.
   */
  schedulingLatency: {
    name: 'transferlab.cell.scheduling_latency_seconds',
    kind: 'histogram',
    unit: 's',
    description:
      'Time from a cell being ready to run (dependencies succeeded, a slot free) to the executor launching it',
    labels: [LABELS.sweep],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200],
  },
  /** From the controller: the paper's score of each finished cell (reused ones included): Figure 2's points. */
  cellScore: {
    name: 'transferlab.cell.score',
    kind: 'gauge',
    unit: '1',
    description: "A finished cell's score: the mean of its scoreTopK best validation top-1 values (Figure 2)",
    labels: CELL_LABELS,
  },
  /** From the trainer, per running cell: the latest batch's training loss. */
  trainingLoss: {
    name: 'transferlab.training.loss',
    kind: 'gauge',
    unit: '1',
    description: 'Training loss of the latest batch, per running cell',
    labels: TRAINING_LABELS,
  },
  /** From the trainer, per running cell: validation top-1 after the latest epoch. */
  validationTop1: {
    name: 'transferlab.training.validation_top1',
    kind: 'gauge',
    unit: '1',
    description: 'Validation top-1 accuracy after the latest epoch, per running cell',
    labels: TRAINING_LABELS,
  },
  /** From the trainer, per running cell. */
  imagesPerSecond: {
    name: 'transferlab.training.images_per_second',
    kind: 'gauge',
    unit: '{image}/s',
    description: 'Training throughput of the latest batch, per running cell',
    labels: TRAINING_LABELS,
  },
  /** From the trainer: one observation per epoch (training and validation). */
  epochDuration: {
    name: 'transferlab.training.epoch_duration_seconds',
    kind: 'histogram',
    unit: 's',
    description: 'Time of one training epoch, its validation included',
    labels: [LABELS.arm, LABELS.backend],
    buckets: [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600],
  },
  /** From the trainer: each checkpoint written (resumable ones and the final net). */
  checkpointSize: {
    name: 'transferlab.checkpoint.size_bytes',
    kind: 'histogram',
    unit: 'By',
    description: 'Bytes of one checkpoint written to the object store',
    labels: [LABELS.arm, LABELS.backend],
    // 64 KiB .. 16 GiB, times 4.
    buckets: Array.from({ length: 10 }, (_, i) => 2 ** (16 + 2 * i)),
  },
  checkpointDuration: {
    name: 'transferlab.checkpoint.duration_seconds',
    kind: 'histogram',
    unit: 's',
    description: 'Time to serialize and store one checkpoint',
    labels: [LABELS.arm, LABELS.backend],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  },
  /** From every gRPC server: one observation per call of our services (health and reflection excluded). */
  rpcServerDuration: {
    name: 'transferlab.rpc.server.duration_seconds',
    kind: 'histogram',
    unit: 's',
    description: 'gRPC server calls by service, method and status code; streams count until they end',
    labels: [ATTRIBUTES.rpcService, ATTRIBUTES.rpcMethod, ATTRIBUTES.rpcGrpcStatusCode],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600],
  },
} as const satisfies Record<string, MetricSpec>;

/** Prometheus names of the metrics above, plus Prometheus's own `up`: what dashboards query. */
export const PROM = {
  ...(Object.fromEntries(Object.entries(METRICS).map(([key, spec]) => [key, prometheusName(spec)])) as Record<
    keyof typeof METRICS,
    string
  >),
  up: 'up',
};

/** Labels of a cell's metrics: n is "0" for base cells (no layer copied). */
export function cellLabels(sweepId: string, cell: { arm: string; n?: number | undefined; seed: number }) {
  return {
    [LABELS.sweep]: sweepId,
    [LABELS.arm]: cell.arm,
    [LABELS.n]: String(cell.n ?? 0),
    [LABELS.seed]: String(cell.seed),
  };
}

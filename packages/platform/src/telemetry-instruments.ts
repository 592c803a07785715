/**
 * The instruments of transferlab's metrics, made once at start-up from a Meter (after
 * `startTelemetry`) and handed to the code that records: the controller's `SweepMetrics`, the
 * trainer's `TrainingMetrics`, the gRPC servers' `RpcServerMetrics`. Names, units, buckets and
 * labels come from the registry (telemetry-attributes.ts).
 *
 * Per-cell and per-sweep gauges are observable: a table of current values read at each
 * collection, so a value removed from the table (a cell that stopped running, a sweep long
 * finished) stops being exported instead of lingering at its last value.
 */
import type { Attributes, Histogram, Meter } from '@opentelemetry/api';
import { LABELS, METRICS, type MetricSpec, cellLabels } from './telemetry-attributes.ts';

export type { Meter } from '@opentelemetry/api';

function histogram(meter: Meter, spec: MetricSpec): Histogram {
  return meter.createHistogram(spec.name, {
    unit: spec.unit,
    description: spec.description,
    advice: spec.buckets ? { explicitBucketBoundaries: [...spec.buckets] } : undefined,
  });
}

/** Current values by attribute set, exported by an observable gauge. */
class GaugeTable {
  private readonly values = new Map<string, { attributes: Attributes; value: number }>();

  constructor(meter: Meter, spec: MetricSpec) {
    meter.createObservableGauge(spec.name, { unit: spec.unit, description: spec.description }).addCallback((result) => {
      for (const { attributes, value } of this.values.values()) result.observe(value, attributes);
    });
  }

  set(attributes: Attributes, value: number): void {
    if (Number.isFinite(value)) this.values.set(JSON.stringify(attributes), { attributes, value });
  }

  delete(attributes: Attributes): void {
    this.values.delete(JSON.stringify(attributes));
  }

  /** Drops every entry whose attributes match all of `match`. */
  deleteWhere(match: Attributes): void {
    for (const [key, entry] of this.values) {
      if (Object.entries(match).every(([name, value]) => entry.attributes[name] === value)) this.values.delete(key);
    }
  }
}

interface CellLike {
  arm: string;
  n?: number | undefined;
  seed: number;
}

/** The controller's metrics: cells by state, queue depth, cell duration, scores. */
export class SweepMetrics {
  private readonly cells: GaugeTable;
  private readonly queue: GaugeTable;
  private readonly scores: GaugeTable;
  private readonly duration: Histogram;
  private readonly latency: Histogram;
  private readonly expiries = new Map<string, NodeJS.Timeout>();

  constructor(
    meter: Meter,
    /** How long a finished sweep's gauges stay exported. Default one day. */
    private readonly retainMs = 24 * 3600_000,
  ) {
    this.cells = new GaugeTable(meter, METRICS.cells);
    this.queue = new GaugeTable(meter, METRICS.queueDepth);
    this.scores = new GaugeTable(meter, METRICS.cellScore);
    this.duration = histogram(meter, METRICS.cellDuration);
    this.latency = histogram(meter, METRICS.schedulingLatency);
  }

  cellCounts(sweepId: string, counts: Readonly<Record<string, number>>): void {
    for (const [state, count] of Object.entries(counts)) {
      this.cells.set({ [LABELS.sweep]: sweepId, [LABELS.state]: state }, count);
    }
  }

  queueDepth(sweepId: string, depth: number): void {
    this.queue.set({ [LABELS.sweep]: sweepId }, depth);
  }

  cellFinished(sweepId: string, cell: CellLike, state: 'succeeded' | 'failed', seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    // No sweep id: a histogram's series outlive any sweep (see telemetry-attributes.ts).
    this.duration.record(seconds, { [LABELS.arm]: cell.arm, [LABELS.state]: state });
  }

  /** A cell was launched `seconds` after it was ready to run. */
  cellLaunched(sweepId: string, seconds: number): void {
    if (Number.isFinite(seconds) && seconds >= 0) this.latency.record(seconds, { [LABELS.sweep]: sweepId });
  }

  cellScore(sweepId: string, cell: CellLike, score: number): void {
    this.scores.set(cellLabels(sweepId, cell), score);
  }

  /** The sweep ended: its gauges stay for `retainMs` (dashboards show how it ended), then go. */
  sweepFinished(sweepId: string): void {
    this.queueDepth(sweepId, 0);
    clearTimeout(this.expiries.get(sweepId));
    const timer = setTimeout(() => {
      this.expiries.delete(sweepId);
      for (const table of [this.cells, this.queue, this.scores]) table.deleteWhere({ [LABELS.sweep]: sweepId });
    }, this.retainMs);
    timer.unref();
    this.expiries.set(sweepId, timer);
  }
}

/** What a trainer knows of its run as it goes (runner's CellProgress, structurally). */
export interface TrainingReport {
  loss?: number | undefined;
  valTop1?: number | undefined;
  imagesPerSecond?: number | undefined;
  epochDone?: boolean | undefined;
  /** On the report that closes an epoch: the epoch's time, its validation included. */
  epochSeconds?: number | undefined;
}

/** Records one running cell; `end` removes its gauges. */
export interface CellTrainingRecorder {
  progress(report: TrainingReport): void;
  checkpoint(info: { bytes: number; seconds: number }): void;
  end(): void;
}

/** The trainer's metrics: loss, validation top-1 and images/s per running cell; epoch and checkpoint histograms. */
export class TrainingMetrics {
  private readonly loss: GaugeTable;
  private readonly valTop1: GaugeTable;
  private readonly imagesPerSecond: GaugeTable;
  private readonly epochDuration: Histogram;
  private readonly checkpointSize: Histogram;
  private readonly checkpointDuration: Histogram;

  constructor(meter: Meter) {
    this.loss = new GaugeTable(meter, METRICS.trainingLoss);
    this.valTop1 = new GaugeTable(meter, METRICS.validationTop1);
    this.imagesPerSecond = new GaugeTable(meter, METRICS.imagesPerSecond);
    this.epochDuration = histogram(meter, METRICS.epochDuration);
    this.checkpointSize = histogram(meter, METRICS.checkpointSize);
    this.checkpointDuration = histogram(meter, METRICS.checkpointDuration);
  }

  /**
   * A recorder for one run of a cell on a compute backend (tensorflow-gpu, tensorflow, wasm,
   * cpu); sweepId '' (a run outside any sweep) is labelled `none`.
   */
  cell(sweepId: string, cell: CellLike, backend: string): CellTrainingRecorder {
    const labels = { ...cellLabels(sweepId || 'none', cell), [LABELS.backend]: backend };
    const short = { [LABELS.arm]: cell.arm, [LABELS.backend]: backend };
    return {
      progress: (report) => {
        if (report.loss !== undefined) this.loss.set(labels, report.loss);
        if (report.valTop1 !== undefined) this.valTop1.set(labels, report.valTop1);
        if (report.imagesPerSecond !== undefined) this.imagesPerSecond.set(labels, report.imagesPerSecond);
        if (report.epochDone && report.epochSeconds !== undefined && Number.isFinite(report.epochSeconds)) {
          this.epochDuration.record(report.epochSeconds, short);
        }
      },
      checkpoint: ({ bytes, seconds }) => {
        this.checkpointSize.record(bytes, short);
        this.checkpointDuration.record(seconds, short);
      },
      end: () => {
        for (const table of [this.loss, this.valTop1, this.imagesPerSecond]) table.delete(labels);
      },
    };
  }
}

/** gRPC server calls: one histogram, by service, method and status code. */
export class RpcServerMetrics {
  private readonly duration: Histogram;

  constructor(meter: Meter) {
    this.duration = histogram(meter, METRICS.rpcServerDuration);
  }

  call(attributes: Attributes, seconds: number): void {
    this.duration.record(seconds, attributes);
  }
}

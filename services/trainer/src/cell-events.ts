import type { Bus, Logger, PublishOptions } from '@transferlab/platform';
import { cellFinishedSubject, cellProgressSubject } from '@transferlab/platform';
import type { CellProgress, TrainingOutcome } from '@transferlab/runner';

/** What the trainer publishes on `transferlab.cell.progress.<sweepId>.<cellId>`. */
export interface CellProgressEvent extends CellProgress {
  cellId: string;
  sweepId: string;
  attempt: number;
  /** ISO 8601, when the report was made. */
  time: string;
}

/** What the trainer publishes on `transferlab.cell.finished.<sweepId>.<cellId>`. */
export interface CellFinishedEvent {
  cellId: string;
  sweepId: string;
  attempt: number;
  outcome: 'succeeded' | 'failed';
  /** The trained net (`cells/<id>/final/manifest.json`) and its manifest's sha256, on success. */
  finalCheckpoint?: { key: string; sha256: string };
  /** How training went (history, stop reason, throughput), on success. */
  training?: TrainingOutcome;
  /** Why the run failed, on failure. */
  error?: string;
  time: string;
}

/** Keys pino writes itself: a runner field of the same name would make a duplicate JSON key. */
const RESERVED_LOG_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'name', 'service']);

/** The runner's `log(message, fields)` callback onto a pino logger, renaming clashing fields (`name` → `name_`). */
export function runnerLog(log: Logger): (message: string, fields?: Record<string, unknown>) => void {
  return (message, fields = {}) => {
    const safe = Object.fromEntries(
      Object.entries(fields).map(([key, value]) => [RESERVED_LOG_KEYS.has(key) ? `${key}_` : key, value]),
    );
    log.info(safe, message);
  };
}

/** The W3C trace-context header: version-traceid-parentid-flags, lower-case hex. */
export const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * Passes a report on when it closes an epoch, changes phase, or comes at least `intervalMs`
 * after the last one passed on: a bar stays live without a message per batch.
 */
export function throttleProgress(
  emit: (progress: CellProgress) => void,
  options: { intervalMs: number; now?: () => number },
): (progress: CellProgress) => void {
  const now = options.now ?? Date.now;
  let lastAt = -Infinity;
  let lastPhase: CellProgress['phase'] | undefined;
  return (progress) => {
    const at = now();
    if (progress.epochDone || progress.phase !== lastPhase || at - lastAt >= options.intervalMs) {
      lastAt = at;
      lastPhase = progress.phase;
      emit(progress);
    }
  };
}

/**
 * One cell run's events on the bus. Progress is published without waiting (a slow bus never
 * slows training) and in order; `settle` waits for what is still in flight, so a process drains
 * it before it exits. A failed progress publish is logged, never fatal: the checkpoint, not
 * the event, is what a restart depends on.
 */
export class CellEvents {
  private readonly pending = new Set<Promise<unknown>>();
  private readonly publishOptions: PublishOptions;
  private failedPublishes = 0;
  private reportedLosses = 0;

  constructor(
    private readonly bus: Bus,
    private readonly run: { sweepId: string; cellId: string; attempt: number },
    private readonly options: { log: Logger; traceparent?: string | undefined },
  ) {
    this.publishOptions = options.traceparent ? { headers: { traceparent: options.traceparent } } : {};
  }

  progress(progress: CellProgress): void {
    const event: CellProgressEvent = { ...progress, ...this.run, time: new Date().toISOString() };
    const publish = this.bus
      .publish(cellProgressSubject(this.run.sweepId, this.run.cellId), event, this.publishOptions)
      .catch((error: unknown) => {
        // One warning per run is enough to see the bus is down; the count says how much was lost.
        if (this.failedPublishes++ === 0) this.options.log.warn({ err: error }, 'cannot publish progress');
      })
      .finally(() => this.pending.delete(publish));
    this.pending.add(publish);
  }

  /**
   * Publishes the run's end, once: the message id makes a retried publish of the same
   * attempt a duplicate the stream drops.
   */
  async finished(event: Omit<CellFinishedEvent, 'cellId' | 'sweepId' | 'attempt' | 'time'>): Promise<void> {
    await this.settle();
    const full: CellFinishedEvent = { ...this.run, ...event, time: new Date().toISOString() };
    await this.bus.publish(cellFinishedSubject(this.run.sweepId, this.run.cellId), full, {
      ...this.publishOptions,
      msgId: `finished-${this.run.sweepId}-${this.run.cellId}-${this.run.attempt}`,
    });
  }

  /** Waits for every progress publish in flight. */
  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    if (this.failedPublishes > this.reportedLosses) {
      this.reportedLosses = this.failedPublishes;
      this.options.log.warn({ failed: this.failedPublishes }, 'progress reports were lost: the bus refused them');
    }
  }
}

import { parseArgs } from 'node:util';
import type { Cell } from '@transferlab/experiment';
import { type Bus, type Logger, type ObjectStore, type TrainingMetrics, token } from '@transferlab/platform';
import { selectBackend } from '@transferlab/nn';
import { type CellProgress, cellKeys, getJson, trainCell } from '@transferlab/runner';
import { CellEvents, runnerLog, throttleProgress } from './cell-events.ts';
import { checkpointRefAt } from './stored-run.ts';

/** How `run-cell` ends; the process executor and a Kubernetes Job read these. */
export const EXIT_CODES = {
  /** Trained: `final` and `training.json` are stored, completion was published. */
  trained: 0,
  /** Training failed; the error is in the log (JSON on stderr). A retry resumes from the checkpoint. */
  failed: 1,
  /** Bad invocation or no cell definition in the store: a retry cannot help. */
  usage: 2,
  /** Interrupted by SIGTERM/SIGINT: the checkpoint is kept, nothing final was published. 128 + 15. */
  interrupted: 143,
} as const;

export interface RunCellArgs {
  cellId: string;
  sweepId: string;
  /** 1 for the first attempt; reported in events and logs, never changes the result. */
  attempt: number;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const RUN_CELL_USAGE = 'usage: trainer run-cell --cell-id ID --sweep-id SWEEP [--attempt N]';

/** Parses `run-cell`'s flags (the words after the subcommand); throws UsageError naming the problem. */
export function parseRunCellArgs(argv: string[]): RunCellArgs {
  let values: { 'cell-id'?: string; 'sweep-id'?: string; attempt?: string };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'cell-id': { type: 'string' },
        'sweep-id': { type: 'string' },
        attempt: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n${RUN_CELL_USAGE}`);
  }
  const required = (name: 'cell-id' | 'sweep-id'): string => {
    const value = values[name];
    if (!value) throw new UsageError(`--${name} is required\n${RUN_CELL_USAGE}`);
    try {
      return token(value, name.replace('-', ' '));
    } catch (error) {
      throw new UsageError(`--${name}: ${(error as Error).message}`);
    }
  };
  const cellId = required('cell-id');
  const sweepId = required('sweep-id');
  const attempt = values.attempt === undefined ? 1 : Number(values.attempt);
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new UsageError(`--attempt must be a positive integer, got '${values.attempt}'`);
  }
  return { cellId, sweepId, attempt };
}

export interface RunCellDeps {
  store: ObjectStore;
  bus: Bus;
  log: Logger;
  /** Aborted on SIGTERM/SIGINT: training checkpoints at the next batch boundary and stops. */
  signal: AbortSignal;
  /** W3C trace context of the caller, sent as the `traceparent` header of every event. */
  traceparent?: string | undefined;
  /** At most one progress event per interval, plus every epoch's end. Default 500 ms. */
  progressIntervalMs?: number;
  /** Loss, validation top-1, images/s, epoch and checkpoint metrics of the run; none when absent. */
  metrics?: TrainingMetrics;
}

/**
 * The trainer's one-shot mode, the program a cluster's per-cell pod runs: trains the cell the
 * controller stored at `cells/<id>/cell.json` (resuming from its checkpoint), publishes
 * progress and completion, and returns the process exit code (EXIT_CODES). It never throws
 * for a training failure: the error is logged and the code says what happened.
 */
export async function runCellCommand(args: RunCellArgs, deps: RunCellDeps): Promise<number> {
  const { store, signal } = deps;
  const log = deps.log.child({ cellId: args.cellId, sweepId: args.sweepId, attempt: args.attempt });

  const cellKey = cellKeys.cell(args.cellId);
  let cell: Cell | undefined;
  try {
    cell = await getJson<Cell>(store, cellKey);
  } catch (error) {
    log.error({ err: error, key: store.describe(cellKey) }, 'cannot read the cell definition');
    return EXIT_CODES.failed;
  }
  if (!cell) {
    log.error(
      { key: store.describe(cellKey) },
      `no cell definition at ${store.describe(cellKey)}: the controller writes it before it launches a trainer; is TRANSFERLAB_STORE (or TRANSFERLAB_S3_*) the controller's store?`,
    );
    return EXIT_CODES.usage;
  }
  if (cell.id !== args.cellId) {
    log.error({ key: store.describe(cellKey), storedId: cell.id }, `the cell stored at ${cellKey} has id ${cell.id}`);
    return EXIT_CODES.usage;
  }

  const events = new CellEvents(deps.bus, args, { log, traceparent: deps.traceparent });
  const publish = throttleProgress((report) => events.progress(report), {
    intervalMs: deps.progressIntervalMs ?? 500,
  });
  // Metrics see every report, the bus a throttled few. The process is the run: its gauges go with it.
  // The backend is a label of every training metric; trainCell selects the same one (once per process).
  const recorder = deps.metrics?.cell(args.sweepId, cell, (await selectBackend({ log: runnerLog(log) })).name);
  const progress = (report: CellProgress): void => {
    recorder?.progress(report);
    publish(report);
  };
  log.info({ cell: cell.name }, 'training cell');
  let outcome: Awaited<ReturnType<typeof trainCell>>;
  try {
    outcome = await trainCell(store, cell, {
      signal,
      progress,
      log: runnerLog(log),
      onCheckpoint: recorder?.checkpoint,
    });
  } catch (error) {
    log.error({ err: error, cell: cell.name }, 'training failed');
    await events
      .finished({ outcome: 'failed', error: (error as Error).message })
      .catch((publishError: unknown) => log.warn({ err: publishError }, 'cannot publish the failure'));
    return EXIT_CODES.failed;
  }
  if (!outcome) {
    await events.settle();
    log.info({ cell: cell.name }, 'interrupted, checkpoint kept');
    return EXIT_CODES.interrupted;
  }
  try {
    const finalCheckpoint = await checkpointRefAt(store, cellKeys.final(cell.id));
    await events.finished({ outcome: 'succeeded', training: outcome, finalCheckpoint });
  } catch (error) {
    // The trained net is stored: a retry finds it, trains nothing and publishes again.
    log.error({ err: error, cell: cell.name }, 'cell trained, but its completion could not be published');
    return EXIT_CODES.failed;
  }
  log.info(
    { cell: cell.name, epochs: outcome.epochs, stoppedBy: outcome.stoppedBy, seconds: outcome.seconds },
    'cell trained',
  );
  return EXIT_CODES.trained;
}

#!/usr/bin/env node
// The trainer. `run-cell --cell-id ID --sweep-id SWEEP`: train one cell and exit (a cluster's
// per-cell pod, or the process executor's child). Only wiring here; the work is in
// run-cell-command.ts. Exit codes: README.md.
import {
  ATTRIBUTES,
  TrainingMetrics,
  createLogger,
  currentTraceparent,
  extractContext,
  loadConfig,
  openBus,
  openStore,
  withSpan,
} from '@transferlab/platform';
import { type Telemetry, startTelemetry } from '@transferlab/platform/telemetry';
import { STOP_WITH_PARENT_ENV } from '@transferlab/runner/controller/process-executor';
import { trainerConfig } from './config.ts';
import { EXIT_CODES, RUN_CELL_USAGE, parseRunCellArgs, runCellCommand } from './run-cell-command.ts';

const log = createLogger('trainer');
/** How often a trainer started with STOP_WITH_PARENT_ENV looks for its parent. */
const PARENT_POLL_MS = 200;
/** How long an orphaned trainer may take to checkpoint before it exits regardless. */
const ORPHAN_EXIT_MS = 5000;

/**
 * A one-shot trainer's telemetry: its metrics port comes from the executor (a Kubernetes pod
 * keeps the default). A port it cannot take costs the metrics, never the cell.
 */
async function runCellTelemetry(): Promise<Telemetry> {
  try {
    return await startTelemetry({ service: 'trainer' });
  } catch (error) {
    log.warn({ err: error }, 'serving no metrics');
    return startTelemetry({ service: 'trainer', metricsPort: 'off' });
  }
}

async function runCell(argv: string[], telemetry: Telemetry): Promise<number> {
  let args: ReturnType<typeof parseRunCellArgs>;
  let config: ReturnType<typeof loadConfig<typeof trainerConfig>>;
  try {
    args = parseRunCellArgs(argv);
    config = loadConfig(trainerConfig);
  } catch (error) {
    log.error((error as Error).message);
    return EXIT_CODES.usage;
  }
  // SIGTERM (the executor, Kubernetes) or Ctrl-C: checkpoint at the next batch and leave.
  const controller = new AbortController();
  const stop = (signal: NodeJS.Signals | 'parent exited'): void => {
    if (!controller.signal.aborted) log.info({ signal }, 'stopping: writing a checkpoint');
    controller.abort();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Started by the process executor: a controller killed outright (SIGKILL, OOM) must not leave
  // this trainer running beside the one its successor starts for the same cell. The orphan is
  // re-parented, so its parent PID changes; it then stops as on SIGTERM, with a checkpoint.
  if (process.env[STOP_WITH_PARENT_ENV] === '1') {
    const parent = process.ppid;
    const watch = setInterval(() => {
      if (process.ppid === parent) return;
      clearInterval(watch);
      stop('parent exited');
      // Nobody waits for this process any more: if the checkpoint does not come soon (a stalled
      // store or bus), leave anyway; the last complete checkpoint is kept.
      setTimeout(() => process.exit(EXIT_CODES.interrupted), ORPHAN_EXIT_MS).unref();
    }, PARENT_POLL_MS);
    watch.unref();
  }

  const store = openStore();
  let bus: Awaited<ReturnType<typeof openBus>> | undefined;
  try {
    // The bus client waits for a server that is not up yet; a stop request ends the wait.
    const stopped = new Promise<undefined>((resolve) =>
      controller.signal.addEventListener('abort', () => resolve(undefined)),
    );
    bus = await Promise.race([openBus(`trainer-${args.cellId.slice(0, 12)}`), stopped]);
  } catch (error) {
    log.error({ err: error }, 'cannot connect to the bus (TRANSFERLAB_NATS_URL)');
    return EXIT_CODES.failed;
  }
  if (!bus) return EXIT_CODES.interrupted;
  if (!process.env.TRANSFERLAB_NATS_URL) log.warn('TRANSFERLAB_NATS_URL is not set: events stay in this process');
  const connected = bus;
  try {
    // The run is a span in the trace of the controller's cell (TRANSFERLAB_TRACEPARENT).
    const span = {
      parent: extractContext(config.traceparent ? { traceparent: config.traceparent } : undefined),
      attributes: {
        [ATTRIBUTES.sweepId]: args.sweepId,
        [ATTRIBUTES.cellId]: args.cellId,
        [ATTRIBUTES.attempt]: args.attempt,
      },
    };
    return await withSpan('run-cell', span, () =>
      runCellCommand(args, {
        store,
        bus: connected,
        log,
        signal: controller.signal,
        traceparent: currentTraceparent() ?? config.traceparent,
        progressIntervalMs: config.progressIntervalMs,
        metrics: new TrainingMetrics(telemetry.meter),
      }),
    );
  } finally {
    // Drain: what was published reaches the server before the process leaves.
    await bus.close().catch((error: unknown) => log.warn({ err: error }, 'closing the bus failed'));
  }
}

const [command, ...rest] = process.argv.slice(2);
if (command === 'run-cell') {
  const telemetry = await runCellTelemetry();
  const code = await runCell(rest, telemetry);
  // A scraper that watched this run sees its last values before the process goes.
  await telemetry.awaitScrapes(1);
  await telemetry.shutdown();
  process.exit(code);
} else {
  log.error(
    command === undefined
      ? `no command: expected run-cell\n${RUN_CELL_USAGE}`
      : `unknown command '${command}': expected run-cell\n${RUN_CELL_USAGE}`,
  );
  process.exit(EXIT_CODES.usage);
}

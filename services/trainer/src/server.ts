import * as grpc from '@grpc/grpc-js';
import { manifestKey } from '@transferlab/data';
import type { Cell } from '@transferlab/experiment';
import { selectBackend } from '@transferlab/nn';
import {
  type Bus,
  type CellTrainingRecorder,
  type GrpcServer,
  type GrpcServerSecurity,
  type Logger,
  type ObjectStore,
  grpcError,
  startGrpcServer,
  token,
  type TrainingMetrics,
  unaryHandler,
} from '@transferlab/platform';
import {
  CellPhase,
  CellState,
  type CellResult,
  type CheckpointRef,
  type GetRunRequest,
  type GetRunResponse,
  type Progress,
  type Run,
  type RunCellRequest,
  type RunCellResponse,
  TrainerServiceService,
  type TrainerServiceServer,
} from '@transferlab/proto';
import {
  MapperError,
  cellFromProto,
  cellMismatches,
  cellResultToProto,
  progressToProto,
} from '@transferlab/proto/mappers';
import {
  type CellProgress,
  type TrainingOutcome,
  cellKeys,
  getJson,
  readResult,
  trainCell,
  trainedResult,
} from '@transferlab/runner';
import { CellEvents, runnerLog, throttleProgress } from './cell-events.ts';
import { checkpointRefAt, readStoredRun } from './stored-run.ts';

export const TRAINER_SERVICE_NAME = 'transferlab.v1.TrainerService';
export const DEFAULT_PORT = 50064;

export interface TrainerDeps {
  store: ObjectStore;
  /** Progress and completion are published here when a RunCell request names its sweep. */
  bus: Bus;
  log: Logger;
  /** At most one progress message (stream and bus) per interval, plus every epoch's end. Default 500 ms. */
  progressIntervalMs?: number;
  /** Loss, validation top-1, images/s, epoch and checkpoint metrics of each run; none when absent. */
  metrics?: TrainingMetrics;
}

/** What this trainer remembers of a run it did: the store says the rest. */
interface RunRecord {
  cellId: string;
  attempt: number;
  state: CellState;
  progress?: Progress;
  result?: CellResult;
  error?: string;
  startedAt: Date;
  updatedAt: Date;
}

interface ActiveRun {
  cellId: string;
  controller: AbortController;
  /** Settles when the run has ended (its checkpoint written, when interrupted). */
  finished: Promise<void>;
  /** Set when the trainer itself stops the run (shutdown), not the caller. */
  stoppedBy?: 'shutdown';
  /** The run's metrics: its gauges are removed when it ends. */
  recorder?: CellTrainingRecorder;
}

/** Runs remembered for GetRun, oldest dropped first: a long-lived trainer stays small. */
const REMEMBERED_RUNS = 256;

/**
 * The TrainerService handlers over a store and a bus. One cell at a time: a second RunCell
 * while one trains gets RESOURCE_EXHAUSTED, so a trainer's memory and cores serve one net.
 */
export class Trainer {
  private active: ActiveRun | undefined;
  private readonly runs = new Map<string, RunRecord>();
  private stopping = false;

  readonly implementation: TrainerServiceServer;

  constructor(private readonly deps: TrainerDeps) {
    this.implementation = {
      runCell: (call) => {
        this.runCell(call).catch((error: unknown) => {
          deps.log.error({ err: error }, 'RunCell failed unexpectedly');
          call.emit('error', grpcError(grpc.status.INTERNAL, (error as Error).message));
        });
      },
      getRun: unaryHandler((request: GetRunRequest) => this.getRun(request), deps.log),
    };
  }

  /** Stops the run in flight (it checkpoints, its caller gets UNAVAILABLE) and refuses new ones. */
  async stop(): Promise<void> {
    this.stopping = true;
    const active = this.active;
    if (!active) return;
    active.stoppedBy = 'shutdown';
    active.controller.abort();
    await active.finished;
  }

  private async runCell(call: grpc.ServerWritableStream<RunCellRequest, RunCellResponse>): Promise<void> {
    const fail = (code: grpc.status, message: string): void => {
      call.emit('error', grpcError(code, message));
    };
    if (this.stopping) return fail(grpc.status.UNAVAILABLE, 'this trainer is shutting down: send the cell elsewhere');
    // Claimed before the first await, so two calls can never both pass.
    if (this.active) {
      return fail(
        grpc.status.RESOURCE_EXHAUSTED,
        `this trainer is busy with cell ${this.active.cellId}: it trains one cell at a time; retry later or on another trainer`,
      );
    }
    const controller = new AbortController();
    let finish = (): void => undefined;
    const active: ActiveRun = {
      cellId: call.request.cell?.id ?? '',
      controller,
      finished: new Promise<void>((resolve) => (finish = resolve)),
    };
    this.active = active;
    const onCancel = (): void => controller.abort();
    call.on('cancelled', onCancel);
    try {
      await this.train(call, active);
    } finally {
      call.off('cancelled', onCancel);
      active.recorder?.end();
      this.active = undefined;
      finish();
    }
  }

  private async train(call: grpc.ServerWritableStream<RunCellRequest, RunCellResponse>, active: ActiveRun) {
    const { request } = call;
    const { store } = this.deps;
    let cell: Cell;
    try {
      if (request.sweepId) token(request.sweepId, 'sweep_id');
      cell = await this.cellOf(request);
    } catch (error) {
      const known = (error as grpc.ServiceError).code !== undefined;
      call.emit('error', known ? error : grpcError(grpc.status.INVALID_ARGUMENT, (error as Error).message));
      return;
    }
    const sweepId = request.sweepId;
    const attempt = request.attempt || 1;
    const log = this.deps.log.child({ cellId: cell.id, sweepId: sweepId || undefined, attempt });
    const record = this.remember({
      cellId: cell.id,
      attempt,
      state: CellState.CELL_STATE_RUNNING,
      startedAt: new Date(),
      updatedAt: new Date(),
    });
    const events = sweepId ? new CellEvents(this.deps.bus, { sweepId, cellId: cell.id, attempt }, { log }) : undefined;
    // The backend labels every training metric; trainCell selects the same one (once per process).
    const recorder = this.deps.metrics?.cell(sweepId, cell, (await selectBackend()).name);
    active.recorder = recorder;
    const publish = throttleProgress(
      (report: CellProgress) => {
        record.progress = progressToProto(cell.id, report);
        record.updatedAt = new Date();
        if (!call.cancelled) call.write({ event: { $case: 'progress', value: record.progress } });
        events?.progress(report);
      },
      { intervalMs: this.deps.progressIntervalMs ?? 500 },
    );
    // Metrics see every report, the stream and the bus a throttled few.
    const progress = (report: CellProgress): void => {
      recorder?.progress(report);
      publish(report);
    };

    log.info({ cell: cell.name }, 'RunCell: training cell');
    let outcome: TrainingOutcome | undefined;
    try {
      outcome = await trainCell(store, cell, {
        signal: active.controller.signal,
        progress,
        log: runnerLog(log),
        onCheckpoint: recorder?.checkpoint,
      });
    } catch (error) {
      const message = (error as Error).message;
      log.error({ err: error, cell: cell.name }, 'training failed');
      Object.assign(record, { state: CellState.CELL_STATE_FAILED, error: message, updatedAt: new Date() });
      await events
        ?.finished({ outcome: 'failed', error: message })
        .catch((publishError: unknown) => log.warn({ err: publishError }, 'cannot publish the failure'));
      call.emit('error', grpcError(grpc.status.INTERNAL, `training cell ${cell.name} (${cell.id}) failed: ${message}`));
      return;
    }

    if (!outcome) {
      await events?.settle();
      Object.assign(record, { state: CellState.CELL_STATE_CANCELLED, updatedAt: new Date() });
      log.info({ cell: cell.name, by: active.stoppedBy ?? 'caller' }, 'interrupted, checkpoint kept');
      // A cancelled call has no one left to tell; a shutdown tells the caller to go elsewhere.
      if (!call.cancelled) {
        call.emit(
          'error',
          grpcError(
            grpc.status.UNAVAILABLE,
            `the trainer is shutting down: cell ${cell.name} stopped with its checkpoint kept; RunCell again resumes it`,
          ),
        );
      }
      return;
    }

    let result: CellResult;
    try {
      result = await this.resultOf(cell, outcome);
    } catch (error) {
      const message = `cell ${cell.name} trained, but its result cannot be read: ${(error as Error).message}`;
      Object.assign(record, { state: CellState.CELL_STATE_FAILED, error: message, updatedAt: new Date() });
      call.emit('error', grpcError(grpc.status.INTERNAL, message));
      return;
    }
    Object.assign(record, { state: CellState.CELL_STATE_SUCCEEDED, result, updatedAt: new Date() });
    try {
      await events?.finished({ outcome: 'succeeded', training: outcome, finalCheckpoint: result.finalCheckpoint });
    } catch (error) {
      log.warn({ err: error }, 'cannot publish the completion');
    }
    log.info({ cell: cell.name, epochs: outcome.epochs, stoppedBy: outcome.stoppedBy }, 'cell trained');
    if (call.cancelled) return;
    call.write({ event: { $case: 'result', value: result } });
    call.end();
  }

  /**
   * The cell to train: the one the controller stored, checked against the request, else the
   * request's own. Its split (and, for transfer and random cells, its initial net) must exist.
   */
  private async cellOf(request: RunCellRequest): Promise<Cell> {
    const { store } = this.deps;
    if (!request.cell) throw grpcError(grpc.status.INVALID_ARGUMENT, 'cell: is required');
    let cell: Cell;
    try {
      const id = token(request.cell.id, 'cell.id');
      const stored = await getJson<Cell>(store, cellKeys.cell(id));
      if (stored) {
        const problems = cellMismatches(stored, request.cell);
        if (problems.length > 0)
          throw new MapperError('cell', `does not match ${cellKeys.cell(id)}: ${problems.join('; ')}`);
        cell = stored;
      } else {
        cell = cellFromProto(request.cell);
      }
    } catch (error) {
      if ((error as grpc.ServiceError).code !== undefined) throw error;
      throw grpcError(grpc.status.INVALID_ARGUMENT, (error as Error).message);
    }
    let split: string;
    try {
      split = manifestKey(token(cell.splitId, 'cell.split_id'));
    } catch (error) {
      throw grpcError(grpc.status.INVALID_ARGUMENT, (error as Error).message);
    }
    if (!(await store.stat(split))) {
      throw grpcError(
        grpc.status.FAILED_PRECONDITION,
        `split ${cell.splitId} is not in the store (${store.describe(split)}): create it with the dataset-splitter first`,
      );
    }
    if (cell.kind !== 'base') {
      const initial = await checkpointRefAt(store, cellKeys.initial(cell.id));
      if (!initial) {
        throw grpcError(
          grpc.status.FAILED_PRECONDITION,
          `cell ${cell.name} has no initial net (${store.describe(`${cellKeys.initial(cell.id)}/manifest.json`)}): run the transplanter first`,
        );
      }
      const given = request.initialCheckpoint;
      if (given?.key && given.key !== initial.key) {
        throw grpcError(
          grpc.status.INVALID_ARGUMENT,
          `initial_checkpoint.key: a cell starts from ${initial.key}, not ${given.key}`,
        );
      }
      if (given?.sha256 && given.sha256 !== initial.sha256) {
        throw grpcError(
          grpc.status.FAILED_PRECONDITION,
          `initial_checkpoint.sha256: ${initial.key} has sha256 ${initial.sha256}, the request expects ${given.sha256}`,
        );
      }
    }
    return cell;
  }

  /** The evaluated result when the evaluator already stored one, else what training tells. */
  private async resultOf(cell: Cell, outcome: TrainingOutcome): Promise<CellResult> {
    const finalCheckpoint = await checkpointRefAt(this.deps.store, cellKeys.final(cell.id));
    const evaluated = await readResult(this.deps.store, cell.id);
    if (evaluated) return cellResultToProto(evaluated, { finalCheckpoint });
    return trainedResultProto(cell, outcome, finalCheckpoint);
  }

  private async getRun(request: GetRunRequest): Promise<GetRunResponse> {
    let cellId: string;
    try {
      cellId = token(request.cellId, 'cell_id');
    } catch (error) {
      throw grpcError(grpc.status.INVALID_ARGUMENT, (error as Error).message);
    }
    const known = this.runs.get(cellId);
    if (known?.state === CellState.CELL_STATE_RUNNING) return { run: runMessage(known) };

    const stored = await readStoredRun(this.deps.store, cellId);
    if (stored.state === 'done') {
      const cell = await getJson<Cell>(this.deps.store, cellKeys.cell(cellId));
      const evaluated = await readResult(this.deps.store, cellId);
      const result = evaluated
        ? cellResultToProto(evaluated, { finalCheckpoint: stored.finalCheckpoint })
        : cell && trainedResultProto(cell, stored.outcome, stored.finalCheckpoint);
      return {
        run: runMessage({
          cellId,
          attempt: known?.attempt ?? 0,
          state: CellState.CELL_STATE_SUCCEEDED,
          progress: known?.progress,
          result,
          startedAt: known?.startedAt,
          updatedAt: known?.updatedAt,
        }),
      };
    }
    if (stored.state === 'resumable') {
      const cell = await getJson<Cell>(this.deps.store, cellKeys.cell(cellId));
      return {
        run: runMessage({
          cellId,
          attempt: known?.attempt ?? 0,
          // Failed here, or stopped (here or elsewhere) with its checkpoint kept.
          state: known?.state ?? CellState.CELL_STATE_CANCELLED,
          error: known?.error,
          progress: known?.progress ?? {
            cellId,
            phase: CellPhase.CELL_PHASE_TRAINING,
            epoch: stored.epoch,
            maxEpochs: cell?.training.maxEpochs ?? 0,
            step: stored.step,
            batch: stored.nextBatch,
            batchesPerEpoch: 0,
            epochDone: false,
          },
          checkpoint: stored.checkpoint,
          startedAt: known?.startedAt,
          updatedAt: known?.updatedAt,
        }),
      };
    }
    if (known) return { run: runMessage(known) };
    throw grpcError(grpc.status.NOT_FOUND, `cell ${cellId}: this trainer has neither run it nor found it in the store`);
  }

  private remember(record: RunRecord): RunRecord {
    this.runs.delete(record.cellId);
    this.runs.set(record.cellId, record);
    if (this.runs.size > REMEMBERED_RUNS) this.runs.delete(this.runs.keys().next().value!);
    return record;
  }
}

function runMessage(run: Partial<RunRecord> & { cellId: string; state: CellState; checkpoint?: CheckpointRef }): Run {
  return {
    cellId: run.cellId,
    state: run.state,
    attempt: run.attempt ?? 0,
    progress: run.progress,
    result: run.result,
    checkpoint: run.checkpoint,
    error: run.error ?? '',
    startedAt: run.startedAt,
    updatedAt: run.updatedAt,
  };
}

/** A trained cell's result before evaluation: the score and history, no test metrics yet. */
function trainedResultProto(
  cell: Cell,
  outcome: TrainingOutcome,
  finalCheckpoint: CheckpointRef | undefined,
): CellResult {
  return cellResultToProto(trainedResult(cell, outcome), { finalCheckpoint });
}

export interface TrainerServer {
  trainer: Trainer;
  grpc: GrpcServer;
  port: number;
  /**
   * NOT_SERVING, stop the run in flight (it checkpoints; its caller gets UNAVAILABLE), then
   * shut the server down. The bus is the caller's to close.
   */
  shutdown(graceMs?: number): Promise<void>;
}

/** The trainer's gRPC server, listening, with health and reflection. */
export async function createServer(
  deps: TrainerDeps & { port: number; host?: string; security?: GrpcServerSecurity },
): Promise<TrainerServer> {
  const trainer = new Trainer(deps);
  const server = await startGrpcServer({
    services: [
      {
        name: TRAINER_SERVICE_NAME,
        definition: TrainerServiceService,
        implementation: trainer.implementation,
      },
    ],
    port: deps.port,
    host: deps.host,
    log: deps.log,
    security: deps.security,
  });
  return {
    trainer,
    grpc: server,
    port: server.port,
    shutdown: async (graceMs) => {
      server.health.setStatus(TRAINER_SERVICE_NAME, 'NOT_SERVING');
      server.health.setStatus('', 'NOT_SERVING');
      await trainer.stop();
      await server.shutdown(graceMs);
    },
  };
}

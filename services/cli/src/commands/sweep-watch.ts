import * as grpc from '@grpc/grpc-js';
import { type Cell, CellState, type CellStateCount, type Sweep, type SweepEvent, SweepState } from '@transferlab/proto';
import { progressFromProto } from '@transferlab/proto/mappers';
import { type SweepProgress, lineProgress, terminalProgress } from '../progress.ts';
import { type SweepGateway, rpcStatus } from '../sweep-client.ts';

export type ProgressMode = 'bars' | 'lines';

const FINAL_SWEEP: readonly SweepState[] = [
  SweepState.SWEEP_STATE_SUCCEEDED,
  SweepState.SWEEP_STATE_FAILED,
  SweepState.SWEEP_STATE_CANCELLED,
];
const FINAL_CELL: readonly CellState[] = [
  CellState.CELL_STATE_SUCCEEDED,
  CellState.CELL_STATE_REUSED,
  CellState.CELL_STATE_FAILED,
  CellState.CELL_STATE_BLOCKED,
  CellState.CELL_STATE_CANCELLED,
];

/** `SWEEP_STATE_SUCCEEDED` -> `succeeded`, `CELL_STATE_RUNNING` -> `running`. */
export function stateName(state: SweepState | CellState): string {
  return state.replace(/^(SWEEP|CELL)_STATE_/, '').toLowerCase();
}

export function countsText(counts: readonly CellStateCount[]): string {
  if (counts.length === 0) return 'no cells';
  return counts.map((count) => `${count.count} ${stateName(count.state)}`).join(', ');
}

export function isFinalSweepState(state: SweepState): boolean {
  return FINAL_SWEEP.includes(state);
}

interface CellView {
  name: string;
  maxEpochs: number;
  state: CellState;
  started: boolean;
  /** Whether a progress event has been seen for the cell. */
  progressed: boolean;
  finished: boolean;
  error: string;
}

/**
 * What `sweep watch` shows: a bar (or lines) per running cell, the sweep's total with an ETA,
 * and the counts by state. Cells finished before the watch began are summarised once and left
 * out of the ETA, which counts only the work still to do.
 */
class WatchView {
  private readonly cells = new Map<string, CellView>();
  private progress?: SweepProgress;
  private finishedShown = -1;
  sweep?: Sweep;

  constructor(
    private readonly mode: ProgressMode,
    private readonly write: (line: string) => void,
  ) {}

  apply(event: SweepEvent): void {
    const kind = event.kind;
    if (!kind) return;
    switch (kind.$case) {
      case 'snapshot':
        this.snapshot(kind.value.sweep!, kind.value.cells);
        break;
      case 'cell':
        this.cell(kind.value);
        break;
      case 'progress': {
        const view = this.cells.get(kind.value.cellId);
        if (!view || view.finished) return;
        this.startBar(kind.value.cellId, view);
        const progress = progressFromProto(kind.value);
        if (!view.progressed) {
          view.progressed = true;
          // A cell first heard of past epoch 1 trained those epochs before (a resumed attempt, or
          // a watch that joined late): they say nothing of the rate the ETA should use.
          const before = Math.max(0, (progress.epoch ?? 1) - 1);
          if (before > 0) this.progress?.cellResumed(kind.value.cellId, before);
        }
        this.progress?.cellProgress(kind.value.cellId, {
          ...progress,
          maxEpochs: kind.value.maxEpochs || view.maxEpochs,
        });
        break;
      }
      case 'sweep':
        this.sweepChanged(kind.value);
        break;
    }
  }

  stop(): void {
    this.progress?.stop();
  }

  failedCells(): CellView[] {
    return [...this.cells.values()].filter((cell) => cell.state === CellState.CELL_STATE_FAILED);
  }

  private snapshot(sweep: Sweep, cells: Cell[]): void {
    const first = this.progress === undefined;
    if (first) {
      const open = cells.filter((cell) => !FINAL_CELL.includes(cell.state));
      const totalEpochs = open.reduce((sum, cell) => sum + (cell.training?.maxEpochs ?? 0), 0);
      const options = { cells: open.length, totalEpochs };
      // Bars only for a sweep with work left: a finished one gets its summary and nothing else.
      const bars = this.mode === 'bars' && !isFinalSweepState(sweep.state);
      this.progress = bars ? terminalProgress(options) : lineProgress({ ...options, write: this.write });
      this.progress.log(
        `sweep ${sweep.id} (${sweep.name}): ${stateName(sweep.state)}, ${sweep.totalCells} cells: ${countsText(sweep.counts)}`,
      );
      for (const cell of cells) {
        const done = FINAL_CELL.includes(cell.state);
        this.cells.set(cell.id, {
          name: cell.name,
          maxEpochs: cell.training?.maxEpochs ?? 0,
          state: cell.state,
          started: false,
          progressed: false,
          finished: done,
          error: cell.error,
        });
      }
    }
    for (const cell of cells) this.cell(cell);
    this.sweepChanged(sweep);
  }

  private startBar(cellId: string, view: CellView): void {
    if (view.started) return;
    view.started = true;
    this.progress?.cellStarted(cellId, view.name, view.maxEpochs);
  }

  private cell(cell: Cell): void {
    let view = this.cells.get(cell.id);
    if (!view) {
      view = {
        name: cell.name,
        maxEpochs: cell.training?.maxEpochs ?? 0,
        state: cell.state,
        started: false,
        progressed: false,
        finished: false,
        error: '',
      };
      this.cells.set(cell.id, view);
    }
    const previous = view.state;
    view.state = cell.state;
    view.error = cell.error;
    if (view.finished) return;
    switch (cell.state) {
      case CellState.CELL_STATE_RUNNING:
        this.startBar(cell.id, view);
        break;
      case CellState.CELL_STATE_PENDING:
      case CellState.CELL_STATE_READY:
        // Back to pending after running: the attempt failed and the cell will be retried.
        if (previous === CellState.CELL_STATE_RUNNING && cell.error)
          this.progress?.log(`retry       ${view.name}: ${cell.error}`);
        break;
      case CellState.CELL_STATE_SUCCEEDED:
      case CellState.CELL_STATE_REUSED:
      case CellState.CELL_STATE_FAILED: {
        this.startBar(cell.id, view);
        view.finished = true;
        const outcome =
          cell.state === CellState.CELL_STATE_FAILED
            ? 'failed'
            : cell.state === CellState.CELL_STATE_REUSED
              ? 'reused'
              : 'succeeded';
        this.progress?.cellFinished(cell.id, outcome);
        if (outcome === 'failed') this.progress?.log(`  ${view.name}: ${cell.error}`);
        break;
      }
      case CellState.CELL_STATE_BLOCKED:
      case CellState.CELL_STATE_CANCELLED:
        view.finished = true;
        // A cell that had started is reported by the progress view itself, as interrupted.
        if (view.started) this.progress?.cellFinished(cell.id, 'interrupted');
        else
          this.progress?.log(`${stateName(cell.state).padEnd(11)} ${view.name}${cell.error ? `: ${cell.error}` : ''}`);
        break;
      default:
        break;
    }
  }

  private sweepChanged(sweep: Sweep): void {
    const before = this.sweep;
    this.sweep = sweep;
    if (before && before.state !== sweep.state) this.progress?.log(`sweep ${stateName(sweep.state)}`);
    const finished = sweep.counts
      .filter((count) => FINAL_CELL.includes(count.state))
      .reduce((sum, count) => sum + count.count, 0);
    if (before && finished !== this.finishedShown) this.progress?.log(`cells: ${countsText(sweep.counts)}`);
    this.finishedShown = finished;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Follows a sweep to its end. A watch that times out is re-opened (a fresh snapshot), and one
 * that loses the controller is retried a few times, so a restarted controller does not end it.
 * Returns the sweep as last seen.
 */
export async function followSweep(
  gateway: SweepGateway,
  sweepId: string,
  options: { mode: ProgressMode; write?: (line: string) => void },
): Promise<{ sweep: Sweep | undefined; failed: { name: string; error: string }[] }> {
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const view = new WatchView(options.mode, write);
  let retries = 0;
  try {
    for (;;) {
      try {
        for await (const event of gateway.watch(sweepId)) {
          view.apply(event);
          retries = 0;
        }
        if (!view.sweep || isFinalSweepState(view.sweep.state)) break;
      } catch (error) {
        const status = rpcStatus(error);
        if (status === grpc.status.DEADLINE_EXCEEDED) continue;
        if (status === grpc.status.UNAVAILABLE && view.sweep && retries < 5) {
          retries += 1;
          write(`lost the controller at ${gateway.address}; reconnecting (${retries}/5)`);
          await sleep(2000 * retries);
          continue;
        }
        throw error;
      }
    }
  } finally {
    view.stop();
  }
  return { sweep: view.sweep, failed: view.failedCells().map(({ name, error }) => ({ name, error })) };
}

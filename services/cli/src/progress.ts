import cliProgress from 'cli-progress';
import type { CellProgress } from '@transferlab/runner';

export type { CellProgress };

export interface SweepProgress {
  cellStarted(cellId: string, name: string, maxEpochs: number): void;
  /** The cell starts `epochs` into its budget, from work done before this process saw it. */
  cellResumed(cellId: string, epochs: number): void;
  cellProgress(cellId: string, progress: CellProgress): void;
  cellFinished(cellId: string, outcome: 'succeeded' | 'failed' | 'interrupted' | 'reused'): void;
  log(message: string): void;
  stop(): void;
}

const fmt = (value: number | undefined, digits: number): string => (value === undefined ? '-' : value.toFixed(digits));

function describeProgress(progress: CellProgress): string {
  if (progress.phase !== 'training') return progress.phase;
  const parts = [
    `epoch ${progress.epoch ?? 0}/${progress.maxEpochs ?? '?'}`,
    `loss ${fmt(progress.loss, 3)}`,
    `val top-1 ${fmt(progress.valTop1, 3)}`,
    `${fmt(progress.imagesPerSecond, 0)} img/s`,
  ];
  return parts.join(' | ');
}

/**
 * Overall progress is counted in epochs of budget: a cell that stops early by patience counts
 * its whole budget, so the ETA is an upper bound that tightens as cells finish. Work done before
 * this process began (reused cells, the epochs a resumed cell had checkpointed, the epochs of a
 * cell already running when a watch joined) is no evidence of this process's speed, so the rate
 * behind the ETA counts only the epochs trained since.
 */
export class Tally {
  private doneUnits = 0;
  private priorUnits = 0;
  private readonly running = new Map<string, { name: string; budget: number; units: number; prior: number }>();
  constructor(readonly totalUnits: number) {}

  start(cellId: string, name: string, budget: number): void {
    this.running.set(cellId, { name, budget, units: 0, prior: 0 });
  }
  name(cellId: string): string | undefined {
    return this.running.get(cellId)?.name;
  }
  /** The cell begins `epochs` into its budget: trained before, not by us. */
  resume(cellId: string, epochs: number): void {
    const cell = this.running.get(cellId);
    if (!cell) return;
    cell.prior = Math.min(cell.budget, Math.max(0, epochs));
    cell.units = Math.max(cell.units, cell.prior);
  }
  advance(cellId: string, units: number): boolean {
    const cell = this.running.get(cellId);
    if (!cell) return false;
    cell.units = Math.min(cell.budget, Math.max(cell.prior, units));
    return true;
  }
  finish(cellId: string, outcome: 'succeeded' | 'failed' | 'interrupted' | 'reused'): void {
    const cell = this.running.get(cellId);
    if (!cell) return;
    this.running.delete(cellId);
    if (outcome === 'interrupted') return;
    this.doneUnits += cell.budget;
    this.priorUnits += outcome === 'reused' ? cell.budget : cell.prior;
  }
  /** Epochs of budget accounted for, by anyone. */
  value(): number {
    let units = this.doneUnits;
    for (const cell of this.running.values()) units += cell.units;
    return units;
  }
  /** Epochs of budget accounted for before this process: reused, resumed, joined. */
  prior(): number {
    let units = this.priorUnits;
    for (const cell of this.running.values()) units += cell.prior;
    return units;
  }
  /** Seconds left at the rate of the work done since `startedMs`, or undefined before any. */
  etaSeconds(startedMs: number, nowMs: number): number | undefined {
    const worked = this.value() - this.prior();
    if (worked <= 0) return undefined;
    return Math.max(0, ((nowMs - startedMs) / 1000 / worked) * (this.totalUnits - this.value()));
  }
}

/** How far into its budget a progress report puts a cell, in epochs (fractions mid-epoch). */
function unitsOf(progress: CellProgress): number {
  return progress.epoch !== undefined && progress.batch !== undefined && progress.batchesPerEpoch
    ? Math.max(0, progress.epoch - 1) + progress.batch / progress.batchesPerEpoch
    : (progress.epoch ?? 0);
}

/** Bars on a terminal: one per running cell plus the sweep's total with an ETA. */
export function terminalProgress(options: { cells: number; totalEpochs: number }): SweepProgress {
  const tally = new Tally(options.totalEpochs);
  const multibar = new cliProgress.MultiBar(
    {
      clearOnComplete: false,
      hideCursor: true,
      format: ' {label} |{bar}| {percentage}% | {detail}',
      barsize: 24,
      etaBuffer: 50,
      fps: 5,
    },
    cliProgress.Presets.shades_classic,
  );
  let finishedCells = 0;
  // The total bar counts the epochs this process trains, so cli-progress's ETA, which reads the
  // bar's rate, is not thrown by a jump when a cell is reused or resumed.
  const total = multibar.create(
    Math.max(1, tally.totalUnits),
    0,
    { label: 'sweep'.padEnd(22), detail: `0/${options.cells} cells` },
    { format: ' {label} |{bar}| {percentage}% | {value}/{total} epochs to train | {detail} | ETA {eta_formatted}' },
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  const refreshTotal = (): void => {
    const prior = tally.prior();
    total.setTotal(Math.max(1, Math.round((tally.totalUnits - prior) * 10) / 10));
    total.update(Math.round((tally.value() - prior) * 10) / 10, {
      detail: `${finishedCells}/${options.cells} cells`,
    });
  };
  refreshTotal();
  return {
    cellStarted(cellId, name, maxEpochs) {
      tally.start(cellId, name, maxEpochs);
      bars.set(cellId, multibar.create(maxEpochs, 0, { label: name.padEnd(22), detail: 'preparing' }));
    },
    cellResumed(cellId, epochs) {
      tally.resume(cellId, epochs);
      bars.get(cellId)?.update(epochs);
      refreshTotal();
    },
    cellProgress(cellId, progress) {
      const bar = bars.get(cellId);
      const units = unitsOf(progress);
      if (!bar || !tally.advance(cellId, units)) return;
      bar.setTotal(progress.maxEpochs ?? bar.getTotal());
      bar.update(units, { detail: describeProgress(progress) });
      refreshTotal();
    },
    cellFinished(cellId, outcome) {
      const name = tally.name(cellId);
      tally.finish(cellId, outcome);
      finishedCells += 1;
      const bar = bars.get(cellId);
      if (bar) {
        multibar.remove(bar);
        bars.delete(cellId);
      }
      if (name) multibar.log(`${outcome.padEnd(11)} ${name}\n`);
      refreshTotal();
    },
    log(message) {
      multibar.log(`${message}\n`);
    },
    stop() {
      multibar.stop();
    },
  };
}

/** Line-based progress for logs and CI: a line per finished epoch and per finished cell, with the ETA. */
export function lineProgress(options: {
  cells: number;
  totalEpochs: number;
  write?: (line: string) => void;
  now?: () => number;
}): SweepProgress {
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const now = options.now ?? Date.now;
  const tally = new Tally(options.totalEpochs);
  const started = now();
  let finishedCells = 0;
  const eta = (): string => {
    const seconds = tally.etaSeconds(started, now());
    return seconds === undefined ? '-' : `${Math.round(seconds)}s`;
  };
  return {
    cellStarted(cellId, name, maxEpochs) {
      tally.start(cellId, name, maxEpochs);
      write(`start       ${name}`);
    },
    cellResumed(cellId, epochs) {
      tally.resume(cellId, epochs);
    },
    cellProgress(cellId, progress) {
      if (progress.epoch === undefined) return;
      const name = tally.name(cellId);
      if (name === undefined || !tally.advance(cellId, progress.epoch)) return;
      if (progress.epochDone) write(`  ${name}: ${describeProgress(progress)} | sweep ETA ${eta()}`);
    },
    cellFinished(cellId, outcome) {
      const name = tally.name(cellId);
      tally.finish(cellId, outcome);
      finishedCells += 1;
      write(`${outcome.padEnd(11)} ${name ?? cellId} (${finishedCells}/${options.cells} cells, ETA ${eta()})`);
    },
    log(message) {
      write(message);
    },
    stop() {},
  };
}

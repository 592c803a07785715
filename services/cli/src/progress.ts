import cliProgress from 'cli-progress';
import type { CellProgress } from '@transferlab/runner';

export type { CellProgress };

export interface SweepProgress {
  cellStarted(cellId: string, name: string, maxEpochs: number): void;
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
 * its whole budget, so the ETA is an upper bound that tightens as cells finish.
 */
class Tally {
  doneUnits = 0;
  readonly running = new Map<string, { name: string; budget: number; units: number }>();
  constructor(readonly totalUnits: number) {}
  value(): number {
    let units = this.doneUnits;
    for (const cell of this.running.values()) units += cell.units;
    return units;
  }
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
  const total = multibar.create(
    Math.max(1, tally.totalUnits),
    0,
    { label: 'sweep'.padEnd(22), detail: `0/${options.cells} cells` },
    { format: ' {label} |{bar}| {percentage}% | {value}/{total} epochs of budget | {detail} | ETA {eta_formatted}' },
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  const refreshTotal = (): void => {
    total.update(Math.round(tally.value() * 10) / 10, { detail: `${finishedCells}/${options.cells} cells` });
  };
  refreshTotal();
  return {
    cellStarted(cellId, name, maxEpochs) {
      tally.running.set(cellId, { name, budget: maxEpochs, units: 0 });
      bars.set(cellId, multibar.create(maxEpochs, 0, { label: name.padEnd(22), detail: 'preparing' }));
    },
    cellProgress(cellId, progress) {
      const cell = tally.running.get(cellId);
      const bar = bars.get(cellId);
      if (!cell || !bar) return;
      const fraction =
        progress.epoch !== undefined && progress.batch !== undefined && progress.batchesPerEpoch
          ? Math.max(0, progress.epoch - 1) + progress.batch / progress.batchesPerEpoch
          : (progress.epoch ?? 0);
      cell.units = Math.min(cell.budget, fraction);
      bar.setTotal(progress.maxEpochs ?? cell.budget);
      bar.update(cell.units, { detail: describeProgress(progress) });
      refreshTotal();
    },
    cellFinished(cellId, outcome) {
      const cell = tally.running.get(cellId);
      tally.running.delete(cellId);
      if (cell && outcome !== 'interrupted') tally.doneUnits += cell.budget;
      finishedCells += 1;
      const bar = bars.get(cellId);
      if (bar) {
        multibar.remove(bar);
        bars.delete(cellId);
      }
      if (cell) multibar.log(`${outcome.padEnd(11)} ${cell.name}\n`);
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
}): SweepProgress {
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const tally = new Tally(options.totalEpochs);
  const started = Date.now();
  let finishedCells = 0;
  const eta = (): string => {
    const value = tally.value();
    if (value <= 0) return '-';
    const seconds = ((Date.now() - started) / 1000 / value) * (tally.totalUnits - value);
    return `${Math.max(0, Math.round(seconds))}s`;
  };
  return {
    cellStarted(cellId, name, maxEpochs) {
      tally.running.set(cellId, { name, budget: maxEpochs, units: 0 });
      write(`start       ${name}`);
    },
    cellProgress(cellId, progress) {
      const cell = tally.running.get(cellId);
      if (!cell) return;
      if (progress.epoch !== undefined) cell.units = Math.min(cell.budget, progress.epoch);
      if (progress.epochDone) {
        write(`  ${cell.name}: ${describeProgress(progress)} | sweep ETA ${eta()}`);
      }
    },
    cellFinished(cellId, outcome) {
      const cell = tally.running.get(cellId);
      tally.running.delete(cellId);
      if (cell && outcome !== 'interrupted') tally.doneUnits += cell.budget;
      finishedCells += 1;
      write(`${outcome.padEnd(11)} ${cell?.name ?? cellId} (${finishedCells}/${options.cells} cells, ETA ${eta()})`);
    },
    log(message) {
      write(message);
    },
    stop() {},
  };
}

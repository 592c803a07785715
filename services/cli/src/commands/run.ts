import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { type Cell, type SweepSpec, expandGrid, parseSpec, withOnlyMeasures } from '@transferlab/experiment';
import { runLocalSweep, workerCount } from '@transferlab/runner';
import { type SweepProgress, lineProgress, terminalProgress } from '../progress.ts';
import { writeReport } from '../report-files.ts';

export interface RunOptions {
  store: string;
  out?: string;
  workers?: number;
  /** Bars on a terminal, lines otherwise. */
  progress?: 'bars' | 'lines';
  /** Only the base nets and the cheap measures (the spec's measures.only). */
  onlyMeasures?: boolean;
}

export async function loadSpec(file: string): Promise<{ spec: SweepSpec; specDir: string }> {
  const path = resolve(file);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the sweep spec ${path}: ${(error as Error).message}`);
  }
  return { spec: parseSpec(text, path), specDir: dirname(path) };
}

/** Signals closer together than this are one Ctrl-C delivered twice (see onSignal). */
const SAME_KEYPRESS_MS = 1000;

const mib = (bytes: number): string => `${Math.round(bytes / 1024 / 1024)} MiB`;

/** `transferlab run SPEC`: the whole sweep on this machine, then its report. Returns the exit code. */
export async function runSweep(asWritten: SweepSpec, specDir: string, options: RunOptions): Promise<number> {
  const spec = options.onlyMeasures ? withOnlyMeasures(asWritten) : asWritten;
  const plan = expandGrid(spec);
  const workers = workerCount(spec, options.workers);
  const outDir = resolve(options.out ?? resolve(options.store, '..', 'reports', spec.name));
  const totalEpochs = plan.cells.reduce((sum, cell) => sum + cell.training.maxEpochs, 0);
  const useBars = (options.progress ?? (process.stderr.isTTY ? 'bars' : 'lines')) === 'bars';
  const progress: SweepProgress = useBars
    ? terminalProgress({ cells: plan.cells.length, totalEpochs })
    : lineProgress({ cells: plan.cells.length, totalEpochs });
  progress.log(
    `sweep ${spec.name}: ${plan.cells.length} cells over ${plan.splits.length} split(s), ${workers} worker process(es), store ${resolve(options.store)}`,
  );

  const controller = new AbortController();
  let firstSignalAt: number | undefined;
  const onSignal = (): void => {
    const now = Date.now();
    if (firstSignalAt === undefined) {
      firstSignalAt = now;
      progress.log(
        'stopping: running cells write a checkpoint at their next batch and stop; the next run resumes them (Ctrl-C again to quit now)',
      );
      controller.abort();
      return;
    }
    // One Ctrl-C can arrive more than once: the terminal signals the whole process group, and
    // a wrapper in it (npm, tsx's CLI) relays the same signal to its child. Copies within a
    // second are that one keypress.
    if (now - firstSignalAt < SAME_KEYPRESS_MS) return;
    // A second Ctrl-C: leave now. The workers see the channel close, checkpoint at their next
    // batch and exit on their own, so no work is lost and nothing is left running.
    progress.stop();
    console.error('quit: workers checkpoint at their next batch and exit; run the same command again to resume');
    process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const started = Date.now();
  let lastSplitMessage = 0;
  try {
    const outcome = await runLocalSweep(spec, {
      specDir,
      storeRoot: resolve(options.store),
      workers,
      signal: controller.signal,
      observer: {
        splitProgress: (message) => {
          if (Date.now() - lastSplitMessage > 2000) {
            lastSplitMessage = Date.now();
            progress.log(message);
          }
        },
        cellStarted: (cell: Cell) => progress.cellStarted(cell.id, cell.name, cell.training.maxEpochs),
        cellResumed: (cell, at) => {
          progress.cellResumed(cell.id, at.epoch);
          progress.log(`resume      ${cell.name} from its checkpoint: epoch ${at.epoch + 1}, batch ${at.batch + 1}`);
        },
        cellProgress: (cell, p) => progress.cellProgress(cell.id, { ...p, maxEpochs: cell.training.maxEpochs }),
        cellFinished: (cell, outcome, error) => {
          if (outcome === 'reused') progress.cellStarted(cell.id, cell.name, cell.training.maxEpochs);
          progress.cellFinished(cell.id, outcome);
          if (outcome === 'failed' && error) progress.log(`  ${cell.name}: ${error.message}`);
        },
      },
    });
    progress.stop();
    if (outcome.sweepError !== undefined && !outcome.interrupted) {
      // The sweep never got to its cells (a bad dataset, an unwritable store): no report to draw.
      console.error(`error: sweep ${spec.name} failed: ${outcome.sweepError}`);
      return 1;
    }
    const seconds = (Date.now() - started) / 1000;
    const trained = outcome.results.filter((result) => outcome.states.get(result.cellId) !== 'reused');
    const backends = [...new Set(outcome.results.map((result) => result.backend ?? 'unknown'))].join(', ');
    const { files, warnings, findings } = await writeReport(outDir, {
      spec,
      results: outcome.results,
      extra: {
        'wall time (this run)': `${seconds.toFixed(1)} s`,
        'cells trained (this run)': String(trained.length),
        'cells reused': String(outcome.results.length - trained.length),
        'worker processes': String(outcome.workers),
        'peak worker memory (RSS)': mib(outcome.peakWorkerRssBytes),
        backend: backends,
      },
    });
    for (const warning of warnings) console.log(`warning: ${warning}`);
    for (const line of findings) console.log(line);
    const failed = [...outcome.states.values()].filter((state) => state === 'failed').length;
    const blocked = [...outcome.states.values()].filter((state) => state === 'blocked').length;
    console.log(
      `${outcome.results.length}/${plan.cells.length} cells finished (${trained.length} trained now) in ${seconds.toFixed(1)} s; ` +
        `peak worker RSS ${mib(outcome.peakWorkerRssBytes)}; backend ${backends}`,
    );
    console.log(`report: ${files.find((file) => file.endsWith('index.html'))}`);
    if (outcome.interrupted) {
      console.log('interrupted: run the same command again to resume');
      return 130;
    }
    const unfinished = plan.cells.length - outcome.results.length - failed - blocked;
    if (unfinished > 0) {
      // Neither finished nor failed, and no interrupt: something stopped the sweep early. Never exit 0 on it.
      console.error(`${unfinished} cell(s) did not run to the end; run the same command again to resume them`);
      return 1;
    }
    if (failed > 0 || blocked > 0) {
      for (const [id, error] of outcome.errors) {
        const cell = plan.cells.find((c) => c.id === id);
        console.error(`failed: ${cell?.name ?? id}: ${error.message}`);
      }
      console.error(`${failed} cell(s) failed, ${blocked} blocked by a failed dependency`);
      return 1;
    }
    return 0;
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

import type { LayerMeasure } from './measures.ts';
import { ALL_ARMS, baseArmOf, isBandArm, otherHalf } from './cells.ts';
import type { Arm, Cell, CellKind, Half, SweepPlan, TransferMode } from './cells.ts';
import { lastPhaseStart } from './schedule.ts';
import { MIN_RISE, TREND_WINDOW, paperScoreOver, recentTrend, summarize } from './stats.ts';
import type { Summary } from './stats.ts';

/** Why a run ended: validation top-1 stopped improving, the epoch budget ran out, or a wall-clock limit hit. */
export type StoppedBy = 'plateau' | 'max-epochs' | 'time-limit';

/** What a trainer reports for one finished cell. Accuracies are fractions in [0, 1]. */
/**
 * uncached: every step ran the whole net. exact: the frozen layers' outputs were computed once
 * per image and the layers above trained from them (the same weights, bit for bit). views: the
 * same, once per image and fixed augmented view (`augment.views: fixed`).
 */
export type PrefixCacheMode = 'uncached' | 'exact' | 'views';

export interface PrefixCacheUse {
  mode: PrefixCacheMode;
  /** cached: the layer whose outputs were cached */
  layer?: string;
  /** cached: the cache's size in bytes */
  bytes?: number;
  /** uncached: why (nothing frozen, random augmentation, over the memory budget, ...) */
  reason?: string;
}

export interface CellResult {
  cellId: string;
  name: string;
  arm: Arm;
  kind: CellKind;
  n?: number;
  seed: number;
  target: Half;
  /**
   * The primary score: top-1 of the final net on the target half's held-out test split, which
   * no decision of the run (stopping, picking an epoch) ever looked at. NaN until evaluated.
   */
  score: number;
  /** The paper's secondary score: mean of the scoreTopK best validation top-1 values. */
  valScore?: number;
  /** validation top-1 after each evaluation, in order */
  valTop1History: number[];
  testTop1?: number;
  testTop5?: number;
  /** test top-1 per class name */
  perClass?: Record<string, number>;
  /** epochs trained */
  epochs: number;
  stoppedBy: StoppedBy;
  /** validation top-1 was still rising when training stopped */
  stillImproving: boolean;
  seconds: number;
  imagesPerSecond?: number;
  /** compute backend, e.g. 'tensorflow', 'wasm', 'cuda' */
  backend?: string;
  /** how the cell's frozen layers ran (frozen-prefix caching); absent in results from before it */
  prefixCache?: PrefixCacheUse;
  /** measure cells: CKA and LogME per layer */
  measures?: LayerMeasure[];
}

/** One point of Figure 2: an arm at one n, over the seeds that finished. */
export interface ArmPoint extends Summary {
  arm: Arm;
  kind: CellKind;
  target: Half;
  source?: Half;
  mode?: TransferMode;
  n: number;
  seeds: number[];
}

/** A base or control arm: one value per seed, drawn as a band across every n. */
export interface BaseBand extends Summary {
  arm: Arm;
  kind: 'base' | 'control';
  target: Half;
  seeds: number[];
  /** added only because a transfer arm copies from it */
  implicit: boolean;
}

/** Differences paired by seed, then summarised. */
export interface PairedSummary extends Summary {
  seeds: number[];
}

/**
 * Figure 3 at one n for one target half T (source S): the drop from baseT to SnT split into
 * co-adaptation (baseT - TnT) and specificity (TnT - SnT), and the boost of fine-tuned
 * transfer over the base (SnT+ - baseT). Null where an arm it needs is not in the sweep or
 * has no results.
 */
export interface Decomposition {
  target: Half;
  n: number;
  arms: { base: Arm; selffer: Arm; transfer: Arm; transferFineTuned: Arm };
  coAdaptation: PairedSummary | null;
  specificity: PairedSummary | null;
  boost: PairedSummary | null;
}

export interface CellRow {
  id: string;
  name: string;
  arm: Arm;
  kind: CellKind;
  target: Half;
  source?: Half;
  n?: number;
  mode?: TransferMode;
  seed: number;
  splitId: string;
  implicit: boolean;
  status: 'done' | 'missing';
  /** the primary score (test top-1), once the cell is evaluated */
  score?: number;
  /** the paper's validation score, recomputed with this sweep's scoreTopK over `Aggregate.scoreEvaluations` */
  valScore?: number;
  result?: CellResult;
}

export interface BackendSummary {
  backend: string;
  cells: number;
  seconds: number;
  /** mean over the cells that reported it */
  imagesPerSecond: number | null;
}

export interface RunSummary {
  cells: number;
  finished: number;
  missing: number;
  seeds: number[];
  /** summed over finished cells: compute time, not wall-clock time */
  seconds: number;
  backends: BackendSummary[];
}

export interface Aggregate {
  /** how many evaluations each cell's validation score is taken over: the same for every arm */
  scoreEvaluations: number;
  targets: Half[];
  layers: number[];
  /** arms with at least one cell in the plan, in ALL_ARMS order */
  arms: Arm[];
  bases: BaseBand[];
  points: ArmPoint[];
  decomposition: Decomposition[];
  cells: CellRow[];
  warnings: string[];
  summary: RunSummary;
}

/** Listing more names than this in one warning stops being readable. */
const NAMES_IN_WARNING = 8;

/** A selffer arm beating its base by more than this (a fraction) points at a base net trained too short. */
const SELFFER_EXCESS = 0.01;

/** The chance that the slope test flags any base net of a sweep whose base nets have all plateaued. */
const BASE_TREND_ALPHA = 0.05;

export function aggregate(plan: SweepPlan, results: readonly CellResult[]): Aggregate {
  // Measure cells train nothing and have no score: the report's measures section shows them.
  const measureIds = new Set(plan.cells.filter((cell) => cell.kind === 'measure').map((cell) => cell.id));
  plan = { ...plan, cells: plan.cells.filter((cell) => cell.kind !== 'measure') };
  results = results.filter((result) => !measureIds.has(result.cellId));
  const cellIds = new Set(plan.cells.map((cell) => cell.id));
  const resultById = new Map<string, CellResult>();
  for (const result of results) if (cellIds.has(result.cellId)) resultById.set(result.cellId, result);
  const strays = results.filter((result) => !cellIds.has(result.cellId));

  // The smallest budget of any cell: every arm's best-k is then picked from as many draws.
  const scoreEvaluations = Math.min(...plan.cells.map((cell) => cell.training.maxEpochs));
  const rows = plan.cells.map((cell) => cellRow(cell, resultById.get(cell.id), scoreEvaluations));
  const scored = rows.filter((row): row is CellRow & { score: number } => row.score !== undefined);

  const arms = ALL_ARMS.filter((arm) => plan.cells.some((cell) => cell.arm === arm));
  // B first: the paper's main experiment targets B, and A is the reverse direction.
  const targets = (['B', 'A'] as const).filter((half) =>
    plan.cells.some((cell) => cell.target === half && cell.kind !== 'base'),
  );
  // A sweep of base cells only still has halves to show.
  if (targets.length === 0)
    targets.push(...(['B', 'A'] as const).filter((half) => plan.cells.some((cell) => cell.target === half)));
  const layers = [...new Set(plan.cells.flatMap((cell) => (cell.n === undefined ? [] : [cell.n])))].sort(
    (a, b) => a - b,
  );

  const bases: BaseBand[] = [];
  for (const arm of arms.filter((a) => isBandArm(a))) {
    const cells = plan.cells.filter((cell) => cell.arm === arm);
    const done = bySeed(scored.filter((row) => row.arm === arm));
    bases.push({
      arm,
      kind: arm.startsWith('base') ? 'base' : 'control',
      target: cells[0]!.target,
      implicit: cells.every((cell) => cell.implicit === true),
      seeds: [...done.keys()],
      ...summarize([...done.values()]),
    });
  }

  const points: ArmPoint[] = [];
  for (const arm of arms) {
    const cells = plan.cells.filter((cell) => cell.arm === arm && cell.n !== undefined);
    const first = cells[0];
    if (!first) continue;
    for (const n of layers) {
      if (!cells.some((cell) => cell.n === n)) continue;
      const done = bySeed(scored.filter((row) => row.arm === arm && row.n === n));
      points.push({
        arm,
        kind: first.kind,
        target: first.target,
        ...(first.source ? { source: first.source } : {}),
        ...(first.mode ? { mode: first.mode } : {}),
        n,
        seeds: [...done.keys()],
        ...summarize([...done.values()]),
      });
    }
  }

  const decomposition = decompose(scored, { targets, layers, arms });

  const warnings = [
    ...scheduleWarnings(plan),
    ...baseWarnings(plan.cells, resultById),
    ...selfferWarnings(decomposition, scored),
    ...controlWarnings(targets, scored),
    ...otherWarnings(plan, rows, strays.length),
  ];

  return {
    scoreEvaluations,
    targets,
    layers,
    arms,
    bases,
    points,
    decomposition,
    cells: rows,
    warnings,
    summary: runSummary(rows),
  };
}

function cellRow(cell: Cell, result: CellResult | undefined, scoreEvaluations: number): CellRow {
  const row: CellRow = {
    id: cell.id,
    name: cell.name,
    arm: cell.arm,
    kind: cell.kind,
    target: cell.target,
    ...(cell.source ? { source: cell.source } : {}),
    ...(cell.n !== undefined ? { n: cell.n } : {}),
    ...(cell.mode ? { mode: cell.mode } : {}),
    seed: cell.seed,
    splitId: cell.splitId,
    implicit: cell.implicit === true,
    status: result ? 'done' : 'missing',
  };
  if (!result) return row;
  // Recomputing from the history keeps results reused from a sweep with another
  // scoreTopK (which does not change cell ids) scored the way this sweep asks.
  const valScore =
    result.valTop1History.length > 0
      ? paperScoreOver(result.valTop1History, cell.training.scoreTopK, scoreEvaluations)
      : result.valScore;
  const score = result.testTop1 ?? result.score;
  return {
    ...row,
    ...(Number.isFinite(score) ? { score } : {}),
    ...(valScore !== undefined && Number.isFinite(valScore) ? { valScore } : {}),
    result,
  };
}

function bySeed(rows: readonly { seed: number; score: number }[]): Map<number, number> {
  const map = new Map<number, number>();
  for (const row of [...rows].sort((a, b) => a.seed - b.seed)) map.set(row.seed, row.score);
  return map;
}

function paired(minuend: Map<number, number>, subtrahend: Map<number, number>): PairedSummary | null {
  const seeds = [...minuend.keys()].filter((seed) => subtrahend.has(seed)).sort((a, b) => a - b);
  if (seeds.length === 0) return null;
  return { seeds, ...summarize(seeds.map((seed) => minuend.get(seed)! - subtrahend.get(seed)!)) };
}

function decompose(
  scored: readonly (CellRow & { score: number })[],
  options: { targets: readonly Half[]; layers: readonly number[]; arms: readonly Arm[] },
): Decomposition[] {
  const scores = (arm: Arm, n?: number): Map<number, number> =>
    bySeed(scored.filter((row) => row.arm === arm && (n === undefined || row.n === n)));
  const out: Decomposition[] = [];
  for (const target of options.targets) {
    const source = otherHalf(target);
    const arms = {
      base: baseArmOf(target),
      selffer: `${target}n${target}` as Arm,
      transfer: `${source}n${target}` as Arm,
      transferFineTuned: `${source}n${target}+` as Arm,
    };
    const present = (arm: Arm): boolean => options.arms.includes(arm);
    const hasAny =
      (present(arms.base) && present(arms.selffer)) ||
      (present(arms.selffer) && present(arms.transfer)) ||
      (present(arms.base) && present(arms.transferFineTuned));
    if (!hasAny) continue;
    const base = scores(arms.base);
    for (const n of options.layers) {
      const selffer = scores(arms.selffer, n);
      const transfer = scores(arms.transfer, n);
      const fineTuned = scores(arms.transferFineTuned, n);
      out.push({
        target,
        n,
        arms,
        coAdaptation: paired(base, selffer),
        specificity: paired(selffer, transfer),
        boost: paired(fineTuned, base),
      });
    }
  }
  return out;
}

function listNames(names: readonly string[]): string {
  const shown = names.slice(0, NAMES_IN_WARNING).join(', ');
  return names.length > NAMES_IN_WARNING ? `${shown} and ${names.length - NAMES_IN_WARNING} more` : shown;
}

/** The paper trains every net on one schedule; a sweep that does not says so up front. */
function scheduleWarnings(plan: SweepPlan): string[] {
  const base = plan.cells.find((cell) => cell.kind === 'base');
  const other = plan.cells.find((cell) => cell.kind !== 'base');
  if (!base || !other) return [];
  const a = base.training;
  const b = other.training;
  if (
    a.maxEpochs === b.maxEpochs &&
    a.schedule.stepEpochs === b.schedule.stepEpochs &&
    a.schedule.gamma === b.schedule.gamma
  )
    return [];
  return [
    `base cells train ${a.maxEpochs} epochs (rate x${a.schedule.gamma} every ${a.schedule.stepEpochs}) but transfer ` +
      `cells ${b.maxEpochs} (x${b.schedule.gamma} every ${b.schedule.stepEpochs}): arms compared with a base net had ` +
      'another budget, so a gap between them mixes transfer with training length; remove the base overrides',
  ];
}

function baseWarnings(cells: readonly Cell[], results: Map<string, CellResult>): string[] {
  const warnings: string[] = [];
  const copiedBy = (cell: Cell): string => {
    const count = cells.filter((other) => other.sourceCellId === cell.id).length;
    return count > 0 ? `; the ${count} cells that copy from it inherit a net short of its plateau` : '';
  };
  // The slope test asks of every base net at once whether any is still rising: at 5% each, a
  // sweep of 9 flat base nets would raise a false alarm about a third of the time
  // (docs/experiment-protocol.md), so the 5% is shared among them (Bonferroni).
  const family = cells.filter((cell) => cell.kind === 'base' && results.has(cell.id)).length;
  const alpha = BASE_TREND_ALPHA / Math.max(1, family);
  for (const cell of cells) {
    const result = results.get(cell.id);
    if (cell.kind !== 'base' || !result) continue;
    const lastPhase = lastPhaseStart(cell.training.maxEpochs, cell.training.schedule);
    if (result.epochs <= lastPhase) {
      warnings.push(
        `${cell.name} stopped (${result.stoppedBy}) at epoch ${result.epochs}, before its last learning-rate step at ` +
          `epoch ${lastPhase + 1}${copiedBy(cell)}`,
      );
    }
    const trend = recentTrend(result.valTop1History, TREND_WINDOW, MIN_RISE, alpha);
    if (trend.rising) {
      warnings.push(
        `${cell.name} was still improving at its last epoch (${result.epochs}/${cell.training.maxEpochs}): validation ` +
          `top-1 rose by ${(trend.slope * 100).toFixed(2)} points per epoch over its last ${trend.window} epochs ` +
          `(one-sided lower bound ${((trend.lower ?? 0) * 100).toFixed(2)}, above 0 at 95% over the sweep's ${family} ` +
          `base nets); raise the epoch budget${copiedBy(cell)}`,
      );
    }
  }
  // baseA and baseB of one repeat should have trained equally long.
  const bySeedEpochs = new Map<number, Map<Half, number>>();
  for (const cell of cells) {
    const result = results.get(cell.id);
    if (cell.kind !== 'base' || !result) continue;
    const entry = bySeedEpochs.get(cell.seed) ?? new Map<Half, number>();
    entry.set(cell.target, result.epochs);
    bySeedEpochs.set(cell.seed, entry);
  }
  for (const [seed, epochs] of [...bySeedEpochs.entries()].sort(([x], [y]) => x - y)) {
    const a = epochs.get('A');
    const b = epochs.get('B');
    if (a !== undefined && b !== undefined && a !== b) {
      warnings.push(
        `baseA seed=${seed} trained ${a} epochs and baseB seed=${seed} ${b}: transfer from one is compared with ` +
          'a net trained for another length',
      );
    }
  }
  return warnings;
}

// The selffer arm should not beat its base net (in the paper it matches it at best); when it
// clearly does, the base net most likely had not converged.
function selfferWarnings(
  decomposition: readonly Decomposition[],
  scored: readonly (CellRow & { score: number })[],
): string[] {
  const warnings: string[] = [];
  for (const row of decomposition) {
    const drop = row.coAdaptation;
    if (!drop || -drop.mean <= SELFFER_EXCESS) continue;
    if (drop.ci95 !== null && -drop.mean - drop.ci95 <= 0) continue;
    const base = scored.filter((r) => r.arm === row.arms.base && drop.seeds.includes(r.seed));
    const selffer = scored.filter((r) => r.arm === row.arms.selffer && r.n === row.n && drop.seeds.includes(r.seed));
    const avg = (rs: readonly { score: number }[]): string =>
      (rs.reduce((s, r) => s + r.score, 0) / rs.length).toFixed(3);
    warnings.push(
      `${row.arms.selffer} n=${row.n} (${avg(selffer)}) beats ${row.arms.base} (${avg(base)}): the copied layers got a ` +
        `second training budget, so ${row.arms.base} was probably not trained to a plateau; raise training.maxEpochs`,
    );
  }
  return warnings;
}

// The equal-budget control is the base net trained a second budget. When that alone clearly lifts
// it, the base net was short of what its net reaches, and every comparison against the base
// (co-adaptation, the transfer boost over the base) counts extra training as transfer, even
// when the base passed the slope test: a plateau at the last learning rate is not the net's.
function controlWarnings(targets: readonly Half[], scored: readonly (CellRow & { score: number })[]): string[] {
  const warnings: string[] = [];
  for (const target of targets) {
    const base = bySeed(scored.filter((row) => row.arm === `base${target}`));
    const control = bySeed(scored.filter((row) => row.arm === `control${target}`));
    const gains = [...control].filter(([seed]) => base.has(seed)).map(([seed, score]) => score - base.get(seed)!);
    const gain = summarize(gains);
    if (gain.count === 0 || gain.mean <= SELFFER_EXCESS) continue;
    // Below 2 repeats there is no interval: a single large gain is still worth saying.
    const low = gain.ci95 === null ? gain.mean : gain.mean - gain.ci95;
    if (low <= 0) continue;
    const points = (value: number): string => `${value >= 0 ? '+' : ''}${(value * 100).toFixed(1)}`;
    const interval =
      gain.ci95 === null
        ? `${gain.count} repeat`
        : `95% CI ${points(low)} to ${points(gain.mean + gain.ci95)}, ${gain.count} repeats`;
    warnings.push(
      `control${target} (base${target} trained a second budget) is ${points(gain.mean)} points above base${target} ` +
        `(test top-1, ${interval}): base${target} is short of what its net reaches, so comparisons against ` +
        `base${target} count extra training as transfer; read the arms against control${target}`,
    );
  }
  return warnings;
}

function otherWarnings(plan: SweepPlan, rows: readonly CellRow[], strays: number): string[] {
  const warnings: string[] = [];
  const missing = rows.filter((row) => row.status === 'missing');
  if (missing.length > 0) {
    warnings.push(
      `${missing.length} of ${rows.length} cells have no result yet: ${listNames(missing.map((row) => row.name))}; ` +
        'means and intervals use the repeats that finished',
    );
  }
  const improving = rows.filter(
    (row) => row.kind !== 'base' && row.result !== undefined && recentTrend(row.result.valTop1History).rising,
  );
  if (improving.length > 0) {
    warnings.push(
      `${improving.length} transfer, random or control cells were still improving when they stopped ` +
        `(${listNames(improving.map((row) => row.name))}): raise training.maxEpochs`,
    );
  }
  if (strays > 0) warnings.push(`${strays} results belong to no cell of this sweep and were ignored`);
  const seeds = new Set(plan.cells.map((cell) => cell.seed));
  if (seeds.size === 1 && plan.cells.length > 0) {
    warnings.push(
      'one repeat per cell: no confidence intervals, and every finding is inconclusive (set repeats to 3 or more)',
    );
  } else if (seeds.size < 3 && plan.cells.length > 0) {
    warnings.push(`${seeds.size} repeats: every finding is inconclusive below 3 (set repeats to 3 or more)`);
  }
  return warnings;
}

function runSummary(rows: readonly CellRow[]): RunSummary {
  const done = rows.filter((row) => row.result !== undefined);
  const backends = new Map<string, { cells: number; seconds: number; rates: number[] }>();
  for (const row of done) {
    const result = row.result!;
    const key = result.backend ?? 'unknown';
    const entry = backends.get(key) ?? { cells: 0, seconds: 0, rates: [] };
    entry.cells += 1;
    entry.seconds += result.seconds;
    if (result.imagesPerSecond !== undefined) entry.rates.push(result.imagesPerSecond);
    backends.set(key, entry);
  }
  return {
    cells: rows.length,
    finished: done.length,
    missing: rows.length - done.length,
    seeds: [...new Set(rows.map((row) => row.seed))].sort((a, b) => a - b),
    seconds: done.reduce((sum, row) => sum + row.result!.seconds, 0),
    backends: [...backends.entries()]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([backend, entry]) => ({
        backend,
        cells: entry.cells,
        seconds: entry.seconds,
        imagesPerSecond: entry.rates.length === 0 ? null : entry.rates.reduce((s, r) => s + r, 0) / entry.rates.length,
      })),
  };
}

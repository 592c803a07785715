/**
 * The paper's findings, each as an estimate with its 95% CI over repeats and a verdict. The
 * verdict rules are written down here, once, and printed with every report
 * (docs/experiment-protocol.md explains them):
 *
 * - fewer than MIN_REPEATS repeats, or a CI that spans zero: inconclusive;
 * - a CI on the side the paper found: replicates;
 * - a CI on the other side: does not replicate.
 *
 * Differences are paired by seed (one repeat = one split and one set of nets), averaged over
 * the layers a finding is about, then summarised with a Student t interval.
 */
import type { Aggregate, CellRow } from './aggregate.ts';
import type { Arm, Half } from './cells.ts';
import { isBandArm, otherHalf } from './cells.ts';
import { mean, summarize, tQuantile } from './stats.ts';
import type { Summary } from './stats.ts';

/** Below this many repeats no verdict is given: a t interval on two values is nearly unbounded. */
export const MIN_REPEATS = 3;

/** "Recovers" allows the fine-tuned selffer to sit this far (a fraction) below the control. */
export const RECOVERY_MARGIN = 0.01;

/** The layers the paper's co-adaptation dip is about (Figure 2: BnB falls at n = 3..5). */
const MIDDLE_LAYERS = [3, 4, 5];

export type Verdict = 'replicates' | 'does not replicate' | 'inconclusive' | 'not measured';

/** One difference between two arms, paired by seed and averaged over `layers`. */
export interface Comparison {
  id: string;
  /** e.g. `AnB+ − baseB` */
  label: string;
  minuend: Arm;
  subtrahend: Arm;
  target: Half;
  /** the n averaged over; empty when both arms are bands (base or control) */
  layers: number[];
  /** null when either arm has no result for any seed */
  summary: (Summary & { seeds: number[] }) | null;
}

export interface Finding {
  id:
    'specificity' | 'co-adaptation' | 'fine-tuning-recovers' | 'transfer-boost' | 'dissimilar-split' | 'random-filters';
  /** the paper's claim, in words */
  claim: string;
  target: Half;
  /** what the estimates measure, e.g. `BnB − AnB at n = 7` */
  estimates: Comparison[];
  verdict: Verdict;
  /** why this verdict, with the numbers */
  reason: string;
}

type Scores = Map<number, number>;

/** Scores by seed of one arm (at one n, or of a band when n is undefined). */
function scoresOf(cells: readonly CellRow[], arm: Arm, n?: number): Scores {
  const out: Scores = new Map();
  for (const row of cells) {
    if (row.arm !== arm || row.score === undefined) continue;
    if (n !== undefined && row.n !== n) continue;
    out.set(row.seed, row.score);
  }
  return out;
}

/**
 * minuend − subtrahend per seed, averaged over `layers` (a band arm counts the same value at
 * every n). Only seeds with every value present count, so one missing cell drops its seed.
 */
export function compare(
  agg: Pick<Aggregate, 'cells'>,
  minuend: Arm,
  subtrahend: Arm,
  target: Half,
  layers: readonly number[],
  id = `${minuend}-${subtrahend}`,
): Comparison {
  const bands = isBandArm(minuend) && isBandArm(subtrahend);
  const used = bands ? [] : [...layers];
  const perSeed = new Map<number, number[]>();
  const seeds = new Set(agg.cells.map((row) => row.seed));
  for (const seed of seeds) {
    const diffs: number[] = [];
    for (const n of bands ? [undefined] : used) {
      const a = scoresOf(agg.cells, minuend, isBandArm(minuend) ? undefined : n).get(seed);
      const b = scoresOf(agg.cells, subtrahend, isBandArm(subtrahend) ? undefined : n).get(seed);
      if (a === undefined || b === undefined) break;
      diffs.push(a - b);
    }
    if (diffs.length === (bands ? 1 : used.length) && diffs.length > 0) perSeed.set(seed, diffs);
  }
  const sorted = [...perSeed.keys()].sort((x, y) => x - y);
  const label = `${minuend} − ${subtrahend}`;
  return {
    id,
    label,
    minuend,
    subtrahend,
    target,
    layers: used,
    summary:
      sorted.length === 0 ? null : { seeds: sorted, ...summarize(sorted.map((seed) => mean(perSeed.get(seed)!))) },
  };
}

/** Least-squares slope of minuend − subtrahend against n, per seed, then summarised. */
function slopeOver(
  agg: Pick<Aggregate, 'cells'>,
  minuend: Arm,
  subtrahend: Arm,
  target: Half,
  layers: readonly number[],
): Comparison {
  const seeds = [...new Set(agg.cells.map((row) => row.seed))].sort((x, y) => x - y);
  const slopes: number[] = [];
  const used: number[] = [];
  for (const seed of seeds) {
    const points: [number, number][] = [];
    for (const n of layers) {
      const a = scoresOf(agg.cells, minuend, n).get(seed);
      const b = scoresOf(agg.cells, subtrahend, n).get(seed);
      if (a !== undefined && b !== undefined) points.push([n, a - b]);
    }
    if (points.length !== layers.length || points.length < 2) continue;
    const xm = mean(points.map(([x]) => x));
    const ym = mean(points.map(([, y]) => y));
    let sxx = 0;
    let sxy = 0;
    for (const [x, y] of points) {
      sxx += (x - xm) ** 2;
      sxy += (x - xm) * (y - ym);
    }
    slopes.push(sxy / sxx);
    used.push(seed);
  }
  return {
    id: `${minuend}-${subtrahend}-slope`,
    label: `slope of ${minuend} − ${subtrahend} per layer`,
    minuend,
    subtrahend,
    target,
    layers: [...layers],
    summary: used.length === 0 ? null : { seeds: used, ...summarize(slopes) },
  };
}

function bounds(c: Comparison): { lo: number; hi: number } | null {
  const s = c.summary;
  if (!s || s.ci95 === null) return null;
  return { lo: s.mean - s.ci95, hi: s.mean + s.ci95 };
}

function pct(value: number): string {
  const points = value * 100;
  return `${points > 0 ? '+' : ''}${points.toFixed(2)}`;
}

export function describe(c: Comparison): string {
  const s = c.summary;
  if (!s) return `${c.label}: no paired results`;
  const where =
    c.layers.length === 0 ? '' : c.layers.length === 1 ? ` at n = ${c.layers[0]}` : ` over n = ${c.layers.join(', ')}`;
  const ci = s.ci95 === null ? 'no CI' : `95% CI ${pct(s.mean - s.ci95)} to ${pct(s.mean + s.ci95)}`;
  const unit = c.id.endsWith('-slope') ? ' points per layer' : ' points';
  return `${c.label}${where}: ${pct(s.mean)}${unit} (${ci}; ${s.count} repeats)`;
}

/**
 * The verdict on claims that each estimate is above `threshold` (every estimate must be, for
 * "replicates"; any one clearly below `against` is "does not replicate").
 */
function judge(estimates: readonly Comparison[], threshold = 0, against = 0): { verdict: Verdict; why: string } {
  if (estimates.length === 0 || estimates.some((c) => c.summary === null)) {
    return { verdict: 'not measured', why: 'the arms it needs have no paired results' };
  }
  const fewest = Math.min(...estimates.map((c) => c.summary!.count));
  if (fewest < MIN_REPEATS) {
    return { verdict: 'inconclusive', why: `${fewest} repeat(s): a verdict needs at least ${MIN_REPEATS}` };
  }
  const all = estimates.map((c) => bounds(c)!);
  if (all.some((b) => b.hi < against)) return { verdict: 'does not replicate', why: 'a 95% CI lies on the other side' };
  if (all.every((b) => b.lo > threshold))
    return { verdict: 'replicates', why: "every 95% CI lies on the paper's side" };
  return { verdict: 'inconclusive', why: 'a 95% CI spans the line between the outcomes' };
}

function finding(
  id: Finding['id'],
  claim: string,
  target: Half,
  estimates: Comparison[],
  judged: { verdict: Verdict; why: string },
): Finding {
  return {
    id,
    claim,
    target,
    estimates,
    verdict: judged.verdict,
    reason: `${judged.why}. ${estimates.map(describe).join('; ')}`,
  };
}

function notMeasured(id: Finding['id'], claim: string, target: Half, why: string): Finding {
  return { id, claim, target, estimates: [], verdict: 'not measured', reason: why };
}

/** The paper's Table 1 comparisons for a target half, averaged over every n of the sweep. */
export function table1(agg: Pick<Aggregate, 'cells' | 'layers' | 'arms'>, target: Half): Comparison[] {
  const source = otherHalf(target);
  const base = `base${target}` as Arm;
  const control = `control${target}` as Arm;
  const selfferPlus = `${target}n${target}+` as Arm;
  const transferPlus = `${source}n${target}+` as Arm;
  const pairs: [Arm, Arm][] = [
    [transferPlus, base],
    [transferPlus, selfferPlus],
    [transferPlus, control],
    [selfferPlus, control],
    [control, base],
  ];
  return pairs
    .filter(([a, b]) => agg.arms.includes(a) && agg.arms.includes(b))
    .map(([a, b]) => compare(agg, a, b, target, agg.layers));
}

export interface FindingsOptions {
  /**
   * The same sweep run on a random split, when this one is the dissimilar split: the report
   * then says whether the dissimilar split's transfer drop is the larger.
   */
  randomSplit?: Pick<Aggregate, 'cells' | 'layers'>;
}

export function findings(
  agg: Pick<Aggregate, 'cells' | 'layers' | 'arms' | 'targets'>,
  options: FindingsOptions = {},
): Finding[] {
  const out: Finding[] = [];
  for (const target of agg.targets) {
    const source = otherHalf(target);
    const arm = (text: string): Arm => text as Arm;
    const base = arm(`base${target}`);
    const control = arm(`control${target}`);
    const selffer = arm(`${target}n${target}`);
    const selfferPlus = arm(`${target}n${target}+`);
    const transfer = arm(`${source}n${target}`);
    const transferPlus = arm(`${source}n${target}+`);
    const random = arm(`Rn${target}`);
    const has = (...arms: Arm[]): boolean => arms.every((a) => agg.arms.includes(a));
    const layers = agg.layers;
    const top = layers.at(-1);

    // Specificity: the transfer arm falls below the selffer, more so the higher the copy.
    const specificityClaim = `${transfer} is below ${selffer}, and more so as n grows (representation specificity)`;
    if (has(selffer, transfer) && top !== undefined && layers.length >= 2) {
      const gap = compare(agg, selffer, transfer, target, [top], `${selffer}-${transfer}-top`);
      const slope = slopeOver(agg, selffer, transfer, target, layers);
      out.push(finding('specificity', specificityClaim, target, [gap, slope], judge([gap, slope])));
    } else
      out.push(
        notMeasured('specificity', specificityClaim, target, `needs ${selffer} and ${transfer} at two or more n`),
      );

    // Co-adaptation: the frozen selffer dips below its base net at middle n.
    const coClaim = `${selffer} is below ${base} at middle n (fragile co-adaptation)`;
    const middle = layers.filter((n) => MIDDLE_LAYERS.includes(n));
    if (has(base, selffer) && middle.length > 0) {
      const dip = compare(agg, base, selffer, target, middle);
      out.push(finding('co-adaptation', coClaim, target, [dip], judge([dip])));
    } else out.push(notMeasured('co-adaptation', coClaim, target, `needs ${base} and ${selffer} at n among 3, 4, 5`));

    // Fine-tuning recovers: the fine-tuned selffer is no worse than the equal-budget control.
    const recoverClaim = `${selfferPlus} is no more than ${RECOVERY_MARGIN * 100} point below ${control}, the equal-budget control (fine-tuning recovers)`;
    if (has(selfferPlus, control)) {
      const gap = compare(agg, selfferPlus, control, target, layers);
      out.push(
        finding('fine-tuning-recovers', recoverClaim, target, [gap], judge([gap], -RECOVERY_MARGIN, -RECOVERY_MARGIN)),
      );
    } else out.push(notMeasured('fine-tuning-recovers', recoverClaim, target, `needs ${selfferPlus} and ${control}`));

    // The transfer boost: copied features, fine-tuned, beat the fine-tuned selffer and the control.
    const boostClaim = `${transferPlus} is above ${selfferPlus} and above ${control} (transfer + fine-tuning improves generalisation)`;
    if (has(transferPlus, selfferPlus, control)) {
      const estimates = [
        compare(agg, transferPlus, selfferPlus, target, layers),
        compare(agg, transferPlus, control, target, layers),
      ];
      out.push(finding('transfer-boost', boostClaim, target, estimates, judge(estimates)));
    } else
      out.push(
        notMeasured('transfer-boost', boostClaim, target, `needs ${transferPlus}, ${selfferPlus} and ${control}`),
      );

    // Random filters: frozen random layers do far worse than frozen transferred ones.
    const randomClaim = `${random} is below ${transfer} (random frozen filters are worse than transferred ones)`;
    if (has(random, transfer)) {
      const gap = compare(agg, transfer, random, target, layers);
      out.push(finding('random-filters', randomClaim, target, [gap], judge([gap])));
    } else out.push(notMeasured('random-filters', randomClaim, target, `needs ${random} and ${transfer}`));

    // The dissimilar split: its transfer drop (base − AnB) is larger than a random split's.
    const dissimilarClaim = `the transfer drop ${base} − ${transfer} is larger on a dissimilar split than on a random one`;
    if (options.randomSplit && has(base, transfer)) {
      const here = compare(agg, base, transfer, target, layers);
      const there = compare({ cells: options.randomSplit.cells }, base, transfer, target, layers);
      out.push(dissimilar(dissimilarClaim, target, here, there));
    } else {
      out.push(
        notMeasured(
          'dissimilar-split',
          dissimilarClaim,
          target,
          'needs this sweep on a dissimilar split and the same sweep on a random split',
        ),
      );
    }
  }
  return out;
}

/** Unpaired: the two splits share no seeds. Welch's interval on the difference of the means. */
function dissimilar(claim: string, target: Half, here: Comparison, there: Comparison): Finding {
  const a = here.summary;
  const b = there.summary;
  if (!a || !b) return notMeasured('dissimilar-split', claim, target, 'a split has no paired results');
  const count = Math.min(a.count, b.count);
  const diff: Comparison = {
    id: 'dissimilar-minus-random',
    label: `(${here.label}) dissimilar − random`,
    minuend: here.minuend,
    subtrahend: here.subtrahend,
    target,
    layers: here.layers,
    summary: null,
  };
  if (a.sd === null || b.sd === null) {
    return {
      ...notMeasured('dissimilar-split', claim, target, 'one repeat per split: no interval'),
      verdict: 'inconclusive',
    };
  }
  const va = (a.sd * a.sd) / a.count;
  const vb = (b.sd * b.sd) / b.count;
  const df = (va + vb) ** 2 / ((va * va) / (a.count - 1) + (vb * vb) / (b.count - 1));
  const half = welchT(df) * Math.sqrt(va + vb);
  diff.summary = {
    seeds: [],
    mean: a.mean - b.mean,
    ci95: Number.isFinite(half) ? half : null,
    sd: null,
    min: Number.NaN,
    max: Number.NaN,
    count,
    values: [],
  };
  return finding('dissimilar-split', claim, target, [here, there, diff], judge([diff]));
}

function welchT(df: number): number {
  return tQuantile(0.95, Math.max(1, df));
}

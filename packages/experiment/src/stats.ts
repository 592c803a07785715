import jStat from 'jstat';

export function mean(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  let sum = 0;
  for (const value of values) sum += value;
  return sum / values.length;
}

/** Sample standard deviation (n - 1 in the denominator); NaN below two values. */
export function sd(values: readonly number[]): number {
  if (values.length < 2) return Number.NaN;
  const m = mean(values);
  let sum = 0;
  for (const value of values) sum += (value - m) ** 2;
  return Math.sqrt(sum / (values.length - 1));
}

/** Two-sided Student-t quantile: t such that P(|T| <= t) = level, with df degrees of freedom. */
export function tQuantile(level: number, df: number): number {
  return jStat.studentt.inv(1 - (1 - level) / 2, df);
}

/**
 * Half-width of the 95% confidence interval of the mean, t(0.975, n-1) * sd / sqrt(n).
 * Null for a single value: one repeat says nothing about the spread.
 */
export function ci95HalfWidth(values: readonly number[]): number | null {
  if (values.length < 2) return null;
  return (tQuantile(0.95, values.length - 1) * sd(values)) / Math.sqrt(values.length);
}

export interface Summary {
  mean: number;
  /** half-width of the 95% CI of the mean; null with fewer than two values */
  ci95: number | null;
  sd: number | null;
  min: number;
  max: number;
  count: number;
  values: number[];
}

export function summarize(values: readonly number[]): Summary {
  return {
    mean: mean(values),
    ci95: ci95HalfWidth(values),
    sd: values.length < 2 ? null : sd(values),
    min: values.length === 0 ? Number.NaN : Math.min(...values),
    max: values.length === 0 ? Number.NaN : Math.max(...values),
    count: values.length,
    values: [...values],
  };
}

/**
 * The paper's score for a run: the mean of its k best validation top-1 values. Runs shorter
 * than k evaluations use all they have.
 */
export function paperScore(valTop1History: readonly number[], k: number): number {
  const best = [...valTop1History].sort((a, b) => b - a).slice(0, Math.max(1, k));
  return mean(best);
}

/**
 * The paper's score over the first `evaluations` of a run only, so that every arm's best-k is
 * picked from the same number of draws (a run evaluated more often has more chances at a lucky
 * high value).
 */
export function paperScoreOver(valTop1History: readonly number[], k: number, evaluations: number): number {
  return paperScore(valTop1History.slice(0, Math.max(1, evaluations)), k);
}

export interface Trend {
  /** least-squares slope per evaluation over the window */
  slope: number;
  /** half-width of its 95% CI; null below three points */
  ci95: number | null;
  /** the lower end of its one-sided (1 − alpha) interval (what `rising` tests); null below three points */
  lower: number | null;
  /** how many of the last values were fitted */
  window: number;
  /** the slope is positive at one-sided (1 − alpha) and adds at least `minRise` over the window */
  rising: boolean;
}

/** A slope below this over the whole window is noise to a reader, whatever its p-value. */
export const MIN_RISE = 0.005;

/** How many final evaluations the still-improving test reads: a schedule's last rate phase should hold them. */
export const TREND_WINDOW = 5;

/**
 * Is a validation curve still rising at its end? A least-squares line through the last
 * `window` values, and a one-sided t test on its slope: the net "hit the budget" only
 * tells that training stopped, this tells whether it had finished learning. `alpha` is the test's
 * false-alarm rate for one flat curve; a caller testing many curves as one family divides it
 * among them (see baseWarnings in aggregate.ts).
 */
export function recentTrend(values: readonly number[], window = TREND_WINDOW, minRise = MIN_RISE, alpha = 0.05): Trend {
  const ys = values.slice(-window);
  const n = ys.length;
  if (n < 2) return { slope: 0, ci95: null, lower: null, window: n, rising: false };
  const xMean = (n - 1) / 2;
  const yMean = mean(ys);
  let sxx = 0;
  let sxy = 0;
  ys.forEach((y, x) => {
    sxx += (x - xMean) ** 2;
    sxy += (x - xMean) * (y - yMean);
  });
  const slope = sxy / sxx;
  if (n < 3) return { slope, ci95: null, lower: null, window: n, rising: false };
  let sse = 0;
  ys.forEach((y, x) => {
    sse += (y - (yMean + slope * (x - xMean))) ** 2;
  });
  const se = Math.sqrt(sse / (n - 2) / sxx);
  const ci95 = tQuantile(0.95, n - 2) * se;
  // One-sided (1 − alpha): the lower end of a two-sided (1 − 2 alpha) interval.
  const lower = slope - tQuantile(1 - 2 * alpha, n - 2) * se;
  return { slope, ci95, lower, window: n, rising: lower > 0 && slope * (n - 1) >= minRise };
}

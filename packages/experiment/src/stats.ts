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

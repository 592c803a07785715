import { describe, expect, it } from 'vitest';
import { ci95HalfWidth, mean, paperScore, sd, summarize, tQuantile } from './stats.ts';

describe('stats', () => {
  it('has the textbook t quantiles', () => {
    expect(tQuantile(0.95, 1)).toBeCloseTo(12.7062, 4);
    expect(tQuantile(0.95, 4)).toBeCloseTo(2.7764, 4);
  });

  it('computes the 95% CI half-width for 2 samples', () => {
    // mean 0.61, sd = sqrt(0.0002) = 0.0141421, half-width = 12.7062 * 0.0141421 / sqrt(2) = 0.127062
    const values = [0.6, 0.62];
    expect(mean(values)).toBeCloseTo(0.61, 12);
    expect(sd(values)).toBeCloseTo(0.0141421356, 9);
    expect(ci95HalfWidth(values)).toBeCloseTo(0.127062, 6);
  });

  it('computes the 95% CI half-width for 5 samples', () => {
    // mean 3, sd = sqrt(10 / 4) = 1.5811388, half-width = 2.7764451 * 1.5811388 / sqrt(5) = 1.9632432
    const values = [1, 2, 3, 4, 5];
    expect(sd(values)).toBeCloseTo(1.5811388, 7);
    expect(ci95HalfWidth(values)).toBeCloseTo(1.9632432, 6);
  });

  it('gives no interval for one repeat', () => {
    const summary = summarize([0.5]);
    expect(summary).toMatchObject({ mean: 0.5, ci95: null, sd: null, min: 0.5, max: 0.5, count: 1 });
  });

  it('scores a run as the mean of its k best validation values', () => {
    expect(paperScore([0.1, 0.5, 0.3, 0.4, 0.2], 2)).toBeCloseTo(0.45, 12);
    // fewer evaluations than k: all of them
    expect(paperScore([0.2, 0.4], 10)).toBeCloseTo(0.3, 12);
  });
});

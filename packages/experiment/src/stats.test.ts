import { describe, expect, it } from 'vitest';
import { ci95HalfWidth, mean, paperScore, paperScoreOver, recentTrend, sd, summarize, tQuantile } from './stats.ts';

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

describe('recentTrend', () => {
  it('fits the last values by least squares and tests the slope one-sided', () => {
    // A straight line: slope exact, no residual, rising.
    const line = recentTrend([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 5);
    expect(line.window).toBe(5);
    expect(line.slope).toBeCloseTo(0.1, 12);
    expect(line.ci95).toBeCloseTo(0, 12);
    expect(line.rising).toBe(true);
    // Only the window counts: an early climb then a plateau is not rising.
    expect(recentTrend([0.1, 0.3, 0.5, 0.7, 0.7, 0.71, 0.7, 0.7, 0.71], 5).rising).toBe(false);
    // Noise around a flat line: the slope's interval spans zero.
    expect(recentTrend([0.7, 0.72, 0.69, 0.71, 0.7], 5).rising).toBe(false);
    // A slope that is real but below the floor says nothing to a reader.
    expect(recentTrend([0.7, 0.7005, 0.701, 0.7015, 0.702], 5).rising).toBe(false);
    // Against a hand computation: x = 0..4, y = [1, 3, 2, 5, 4]: slope 0.8, sse 3.6, se sqrt(3.6/3/10).
    const hand = recentTrend([1, 3, 2, 5, 4], 5, 0);
    expect(hand.slope).toBeCloseTo(0.8, 12);
    expect(hand.ci95).toBeCloseTo(tQuantile(0.95, 3) * Math.sqrt(0.12), 9);
    // 0.8 - t(0.9, 3) * 0.3464 = 0.8 - 2.353 * 0.3464 = -0.015: not significant at one-sided 95%.
    expect(hand.lower).toBeCloseTo(0.8 - tQuantile(0.9, 3) * Math.sqrt(0.12), 9);
    expect(hand.rising).toBe(false);
    expect(recentTrend([0.5], 5)).toMatchObject({ window: 1, rising: false, ci95: null, lower: null });
    // A smaller alpha widens the one-sided interval: the same rise passes at 5%, not at 5%/9.
    const mild = [0.6, 0.603, 0.602, 0.606, 0.608];
    expect(recentTrend(mild, 5, 0.005).rising).toBe(true);
    expect(recentTrend(mild, 5, 0.005, 0.05 / 9).rising).toBe(false);
    expect(recentTrend([1, 3, 2, 5, 4], 5, 0, 0.01).lower).toBeCloseTo(0.8 - tQuantile(0.98, 3) * Math.sqrt(0.12), 9);
  });

  it('raises a false alarm on a family of flat curves at about alpha when alpha is shared among them', () => {
    // Nine plateaued base nets: a flat validation curve on 500 images (steps of 0.2 points) with
    // independent noise of 0.5 points, 4,000 simulated sweeps from a fixed-seed generator.
    let state = 12345;
    const uniform = (): number => {
      state = (state * 16807) % 2147483647;
      return state / 2147483647;
    };
    const gauss = (): number => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    const flat = (): number[] => Array.from({ length: 10 }, () => Math.round((0.6 + 0.005 * gauss()) * 500) / 500);
    const sweeps = 4000;
    let perNet = 0;
    let shared = 0;
    for (let sweep = 0; sweep < sweeps; sweep++) {
      const curves = Array.from({ length: 9 }, flat);
      if (curves.some((curve) => recentTrend(curve).rising)) perNet++;
      if (curves.some((curve) => recentTrend(curve, 5, 0.005, 0.05 / 9).rising)) shared++;
    }
    // At 5% each, about a third of such sweeps flag a base net; shared, at most about 5%.
    expect(perNet / sweeps).toBeGreaterThan(0.2);
    expect(shared / sweeps).toBeLessThan(0.06);
    // A net still climbing half a point per epoch is flagged all the same.
    const climbing = [0.6, 0.605, 0.61, 0.614, 0.62, 0.626, 0.63, 0.634, 0.64, 0.646];
    expect(recentTrend(climbing, 5, 0.005, 0.05 / 9).rising).toBe(true);
  });

  it('scores every run over the same number of evaluations', () => {
    const history = [0.1, 0.5, 0.3, 0.4, 0.9];
    expect(paperScoreOver(history, 2, 4)).toBeCloseTo(0.45, 12);
    expect(paperScore(history, 2)).toBeCloseTo(0.7, 12);
  });
});

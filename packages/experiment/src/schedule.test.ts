import { expect, test } from 'vitest';
import { learningRateAt } from './schedule.ts';

test('the step schedule multiplies by gamma every stepEpochs epochs', () => {
  const schedule = { stepEpochs: 3, gamma: 0.1 };
  expect([0, 1, 2, 3, 5, 6].map((epoch) => learningRateAt(epoch, 0.01, schedule))).toEqual([
    0.01,
    0.01,
    0.01,
    0.01 * 0.1,
    0.01 * 0.1,
    0.01 * 0.1 ** 2,
  ]);
  expect(() => learningRateAt(0, 0.01, { stepEpochs: 0, gamma: 0.1 })).toThrow(/stepEpochs/);
});
